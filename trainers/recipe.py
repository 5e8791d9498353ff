"""The training recipe: a frozen, typed mirror of a recipe YAML file (``recipes/distill.yaml``).

Layout (defaults in the dataclasses below follow DistilHuBERT / FitHuBERT / Recycle-and-Distill)::

    format: 2
    engine: {kind: torch}              # or {kind: deepspeed, zero_stage: 0, precision: fp32}; or just torch
    teacher: {kind: torchaudio_hubert, checkpoint: hubert_base.pt}
    data: {train: [train.tsv], valid: valid.tsv, batch_seconds: 120, max_seconds: 15}
    loss:
      kind: layer_to_layer             # or ctc / classification (task losses on data.labels)
      distill_weight: null             # task kinds: total = task + distill_weight * distillation (needs teacher)
      layers: {3: 3, 7: 7, 11: 11}     # student layer -> teacher layer (0-based); default: every head
      weights: null                    # default 0.1 per layer and 1.0 for the last (Recycle-and-Distill)
      distance: l2                     # or l1_cosine (DistilHuBERT)
      masking: {prob: 0.8, span: 10}   # masking distillation (eq. 6); omit for plain layer-to-layer
    optimizer: {lr: 2.0e-4, betas: [0.9, 0.98], weight_decay: 0.0, clip_norm: 10.0}
    schedule: {kind: linear, warmup_ratio: 0.07}
    steps: 200000
    logging: {every: 50}
    checkpoint: {every: 1000, keep: 2}
    seed: 0

Relative paths (teacher checkpoint and architecture, manifests) are resolved against the directory of
the recipe file, so a recipe and its data can move together.

Format 1 (a file without ``format:``, or ``format: 1``) named the engine as a string and kept DeepSpeed's
settings in a section of their own (``engine: deepspeed`` + ``deepspeed: {zero_stage: 2, precision: bf16}``);
:func:`recipe_from_dict` reads it into the same :class:`Recipe` as the format-2 file with the same settings,
and both have the same :meth:`Recipe.fingerprint` (the one runs written before format 2 hold), so those
runs resume. Everything this module writes is format 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from planner.config import field, from_data, join, parse_kind, read_yaml
from planner.errors import ConfigError, FieldError
from trainers.engine_config import (
    ENGINE_HINTS,
    ENGINE_KINDS,
    DeepSpeedEngineConfig,
    EngineConfig,
    TorchEngineConfig,
    dump_engine,
)

__all__ = [
    "DEFAULT_ALPHABET",
    "FORMAT_VERSION",
    "CheckpointConfig",
    "DataConfig",
    "DeepSpeedConfig",
    "DeepSpeedEngineConfig",
    "ENGINE_KINDS",
    "EngineConfig",
    "FORMAT_VERSIONS",
    "TorchEngineConfig",
    "LOSS_KINDS",
    "TEACHER_KINDS",
    "LoggingConfig",
    "LossConfig",
    "MaskingConfig",
    "OptimizerConfig",
    "Recipe",
    "ScheduleConfig",
    "TeacherConfig",
    "CompressionConfig",
    "SupernetConfig",
    "with_init",
    "dump_recipe",
    "load_recipe",
    "loads_recipe",
    "recipe_error",
    "recipe_errors",
    "recipe_files",
    "check_recipe_files",
    "recipe_from_dict",
]

#: The format :func:`dump_recipe` writes; :data:`FORMAT_VERSIONS`: the formats :func:`recipe_from_dict` reads.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)

#: The CTC characters when a recipe or a probe task names none (blank is index 0, ``alphabet[i]`` is ``i + 1``).
DEFAULT_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"

# Fields added after runs were first written: left out of the fingerprint while at their default, so a run
# started before they existed still resumes with its unchanged recipe (run.json holds the older fingerprint).
_LATER_FIELDS = {
    ("supernet",): None,
    ("supernet", "partition"): None,
    ("loss", "distill_weight"): None,
    ("optimizer", "fused"): True,
    ("data", "valid_batches"): 8,
    ("data", "valid_labels"): None,
    **{("loss", "masking", name): default for name, default in
       (("overlap", True), ("min_space", 0), ("selection", "static"), ("same_count", False), ("normalize", "paper"))},
}  # fmt: skip


def _parse_paths(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise FieldError(path, f"{value!r} is not a manifest path or a non-empty list of them")
    return tuple(value)


def _parse_layer_map(value: Any, path: str) -> tuple[tuple[int, int], ...] | str | None:
    """``heads`` (None), ``proportional``, ``{student: teacher}`` (YAML mapping) or ``[[student, teacher], ...]``
    -> sorted pairs."""
    if value is None or value == "heads":
        return None
    if value == "proportional":
        return value
    items = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise FieldError(path, f"{value!r} is not a layer mapping (allowed: heads, proportional, "
                               "{student: teacher, ...}, or [[student, teacher], ...] with 0-based layer indices)")  # fmt: skip
    pairs = []
    for i, item in enumerate(items):
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise FieldError(join(path, i), f"{item!r} is not a [student, teacher] pair")
        for v in item:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FieldError(join(path, i), f"{v!r} is not a 0-based layer index")
        pairs.append((item[0], item[1]))
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise FieldError(path, f"student layers repeat in {value!r} (map each student layer once)")
    return tuple(sorted(pairs))


def _dump_layer_map(value: tuple[tuple[int, int], ...] | str | None) -> Any:
    return value if value is None or isinstance(value, str) else {s: t for s, t in value}


def _raise_all(errors: list[FieldError]) -> None:
    """Raises every collected error at once (nothing when the list is empty)."""
    if errors:
        raise FieldError.group(errors)


def _finite_args(value: Any, path: str) -> Any:
    """``value`` with YAML lists made tuples; a NaN or infinite number anywhere in it is refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(path, f"{value!r} is not a finite number (NaN and infinity are not allowed)")
    if isinstance(value, (list, tuple)):
        return tuple(_finite_args(v, join(path, i)) for i, v in enumerate(value))
    if isinstance(value, dict):
        raise FieldError(path, f"{value!r}: a torchaudio.models.wav2vec2_model argument is a number, a string, "
                               "a boolean, null or a list of them")  # fmt: skip
    return value


def _parse_overrides(value: Any, path: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, dict):
        raise FieldError(path, f"expected a mapping of torchaudio.models.wav2vec2_model arguments, got {value!r}")
    errors: list[FieldError] = []
    items = []
    for k, v in value.items():
        if not isinstance(k, str):
            errors.append(FieldError(path, f"{k!r} is not an argument name"))
            continue
        try:
            items.append((k, _finite_args(v, join(path, k))))
        except FieldError as err:
            errors.append(err)
    _raise_all(errors)
    return tuple(sorted(items))


def _dump_overrides(value: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    def plain(x: Any) -> Any:
        return [plain(v) for v in x] if isinstance(x, tuple) else x

    return {k: plain(x) for k, x in value}


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen teacher (the view the trainers read; the YAML of each kind holds only its own fields,
    :data:`TEACHER_KINDS`).

    Attributes:
        kind: ``torchaudio_hubert`` (``torchaudio.models.hubert_base``), ``torchaudio_wav2vec2``
            (``wav2vec2_base``), ``architecture`` (a planner architecture file, ``arch``) or ``self``
            (the student's own architecture in float, compression left out: self-distillation during
            QAT; hidden states are distilled layer to layer, no projection heads needed).
        checkpoint: a ``torch.save``'d state dict of that model (for ``architecture``, the planner
            model's own state dict or a torchaudio one mapped by ``planner.pretrained``). Every kind needs
            one when training starts (:func:`check_recipe_files`).
        arch: the architecture file, for ``kind: architecture``.
        overrides: ``torchaudio.models.wav2vec2_model`` keyword arguments replacing the base
            configuration (e.g. ``encoder_num_layers``), for small or non-base torchaudio teachers.
    """

    kind: Literal["torchaudio_hubert", "torchaudio_wav2vec2", "architecture", "self"]
    checkpoint: str | None = None
    arch: str | None = None
    overrides: Any = field((), parse=_parse_overrides, dump=_dump_overrides)

    def check(self) -> None:
        errors = []
        if self.kind == "architecture" and self.arch is None:
            errors.append(FieldError("arch", "kind: architecture needs arch (a planner architecture file)"))
        if self.kind != "architecture" and self.arch is not None:
            errors.append(FieldError("arch", "only allowed with kind: architecture"))
        if self.kind in ("architecture", "self") and self.overrides:
            errors.append(FieldError("overrides", "only allowed with the torchaudio kinds"))
        _raise_all(errors)


# -- the teacher kinds: each holds only the fields that apply to it --------------------------------------


@dataclass(frozen=True)
class TorchaudioTeacherFields:
    """``teacher: {kind: torchaudio_hubert | torchaudio_wav2vec2, checkpoint, overrides}``."""

    checkpoint: str | None = None
    overrides: Any = field((), parse=_parse_overrides, dump=_dump_overrides)


@dataclass(frozen=True)
class ArchitectureTeacherFields:
    """``teacher: {kind: architecture, arch, checkpoint}``."""

    arch: str
    checkpoint: str | None = None


@dataclass(frozen=True)
class SelfTeacherFields:
    """``teacher: {kind: self, checkpoint}`` (the float weights of the student's own architecture)."""

    checkpoint: str | None = None


#: The YAML fields of each teacher kind; a field of another kind is refused, naming the kind it belongs to.
TEACHER_KINDS: dict[str, type] = {
    "torchaudio_hubert": TorchaudioTeacherFields,
    "torchaudio_wav2vec2": TorchaudioTeacherFields,
    "architecture": ArchitectureTeacherFields,
    "self": SelfTeacherFields,
}

_TEACHER_HINTS = {
    "arch": "only allowed with kind: architecture (a planner architecture file as teacher)",
    "overrides": "only allowed with the torchaudio kinds (torchaudio_hubert, torchaudio_wav2vec2)",
}


def _parse_kind_hinted(table: Mapping[str, type], data: Any, path: str, what: str, hints: Mapping[str, str]) -> Any:
    """:func:`parse_kind`, a field of another kind answered with what it applies to (``hints``)."""
    try:
        return parse_kind(table, data, path, what)
    except FieldError as err:

        def better(e: FieldError) -> FieldError:
            name = e.path[len(path) + 1 :] if e.path.startswith(path + ".") else e.path
            if e.message.startswith("not a field of") and name in hints:
                kind = data.get("kind") if isinstance(data, dict) else data
                own = ", ".join(f.name for f in dataclasses.fields(table[kind])) or "none"
                return FieldError(e.path, f"{hints[name]}; this {what} is kind {kind} (its fields: {own})")
            return e

        raise FieldError.group(better(e) for e in err.errors) from None


def _parse_teacher(value: Any, path: str) -> TeacherConfig | None:
    if value is None:
        return None
    own = _parse_kind_hinted(TEACHER_KINDS, value, path, "teacher", _TEACHER_HINTS)
    kind = value if isinstance(value, str) else value["kind"]
    cfg = TeacherConfig(kind, **{f.name: getattr(own, f.name) for f in dataclasses.fields(own)})
    try:
        cfg.check()
    except FieldError as err:
        raise err.prefixed(path) from None
    return cfg


def _dump_teacher(cfg: TeacherConfig | None) -> Any:
    if cfg is None:
        return None
    return {"kind": cfg.kind, **_own_fields(TEACHER_KINDS[cfg.kind], cfg)}


def _own_fields(cls: type, obj: Any) -> dict[str, Any]:
    """Every field of a kind's class (defaults included), read from the flat config ``obj``."""
    out = {}
    for f in dataclasses.fields(cls):
        dump = f.metadata.get("dump")
        v = getattr(obj, f.name)
        out[f.name] = dump(v) if dump else _full(v)
    return out


@dataclass(frozen=True)
class DataConfig:
    """Audio manifests and batching.

    Attributes:
        train: fairseq-style manifest(s) (first line the root folder, then ``path<TAB>num_samples``).
        valid: held-out manifest: ``planner train`` logs the loss on it every ``logging.every`` steps
            (``valid_loss``) and keeps the best weights in ``OUT/best/``; the distillation proxy scores on it.
        valid_batches: held-out batches per evaluation (the first of the manifest's length-bucketed batches).
        batch_seconds: audio per batch, padding included (length-bucketed batches).
        max_seconds: longer utterances are cropped (a random window, seeded) to this length.
        min_seconds: shorter utterances are skipped.
        sample_rate: audio is resampled to this rate.
        labels: ``path<TAB>label`` per line (paths relative to the first train manifest's root folder) for
            the task losses: a transcript for ``ctc``, a class name for ``classification``.
        valid_labels: the held-out clips' labels for the task losses, paths relative to the ``valid``
            manifest's root folder (default: they are looked up in ``labels``).
    """

    train: tuple[str, ...] = field(parse=_parse_paths)
    valid: str | None = None
    valid_batches: int = field(8, ge=1, le=1_000_000)
    batch_seconds: float = field(120.0, gt=0)
    max_seconds: float = field(15.0, gt=0)
    min_seconds: float = field(0.5, ge=0)
    sample_rate: int = field(16000, gt=0)
    labels: str | None = None
    valid_labels: str | None = None

    def check(self) -> None:
        errors = []
        if self.valid_labels is not None and self.valid is None:
            errors.append(FieldError("valid_labels", "labels the held-out manifest, which needs valid: (a manifest)"))
        if not self.min_seconds <= self.max_seconds:
            errors.append(FieldError("min_seconds", f"{self.min_seconds} must be between 0 and max_seconds "
                                                    f"({self.max_seconds})"))  # fmt: skip
        if not self.batch_seconds >= self.max_seconds:
            errors.append(FieldError("batch_seconds", f"{self.batch_seconds} is less than max_seconds ({self.max_seconds}); "
                                                      "a batch must hold at least the longest utterance"))  # fmt: skip
        _raise_all(errors)


@dataclass(frozen=True)
class MaskingConfig:
    """Span masking for masking distillation (Recycle-and-Distill eq. 6).

    The masks are fairseq's ``compute_mask_indices`` (:func:`trainers.masking.compute_span_mask`):
    each utterance of ``n`` frames gets ``int(prob * n / span + u)`` spans (``u`` uniform in [0, 1), at
    least ``min_masks``). ``schedule: linear`` moves ``prob`` to ``prob_end`` over the run (the paper's "sch").
    The defaults of the fields after ``min_masks`` are this planner's behaviour before they existed (so an
    older recipe keeps its masks, its loss and its fingerprint); ARMHuBERT's configs and fairseq
    (``sungnyun/ARMHuBERT: conf/armhubert/*.yaml``) are ``overlap: false, min_space: 1, selection: uniform,
    same_count: true`` and its code's ``normalize: code`` (``recipes/distill.yaml`` takes those masks and the
    paper's ``normalize: paper``).

    Attributes:
        prob: HuBERT's ``mask_prob``.
        span: HuBERT's ``mask_length`` (the mean span length for ``selection: uniform``).
        schedule: ``constant`` or ``linear`` (from ``prob`` to ``prob_end``).
        prob_end: the last step's ``prob`` for ``linear``.
        min_masks: spans per utterance at least.
        overlap: ``true`` (HuBERT's default): spans may overlap, so about 0.57 of the frames are masked at
            ``prob`` 0.8 and span 10; ``false`` (fairseq's ``no_mask_overlap``): spans are placed in the
            free intervals, ``min_space`` apart, about 0.69 at 0.8 (0.77 with ``selection: uniform``).
        min_space: unmasked frames kept between spans (``mask_min_space``); only with ``overlap: false``.
        selection: span lengths (``mask_selection``): ``static`` (all ``span``) or ``uniform`` (each drawn
            from 0 to ``2 span``, fairseq's ``uniform`` with ARMHuBERT's ``mask_other: 0``).
        same_count: every masked utterance of a batch keeps the same number of masked frames, the smallest
            (fairseq's ``require_same_masks``, on in ARMHuBERT's fairseq).
        normalize: eq. 6's per-layer normalisation. ``paper``: each term by its own frame count
            (masked term by ``|M|``, unmasked by ``n - |M|``); ``code``: both by all ``n`` valid frames, as
            the authors' ``train.py`` divides both sums by ``B * T``.
    """

    prob: float = field(0.8, gt=0, le=1)
    span: int = field(10, ge=1)
    schedule: Literal["constant", "linear"] = "constant"
    prob_end: float | None = field(None, gt=0, le=1)
    min_masks: int = field(2, ge=0)
    overlap: bool = True
    min_space: int = field(0, ge=0)
    selection: Literal["static", "uniform"] = "static"
    same_count: bool = False
    normalize: Literal["paper", "code"] = "paper"

    def check(self) -> None:
        errors = []
        for name in ("prob", "prob_end"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                errors.append(FieldError(name, f"{v} is not in (0, 1]"))
        if self.span < 1:
            errors.append(FieldError("span", f"{self.span} must be positive"))
        if self.min_masks < 0:
            errors.append(FieldError("min_masks", f"{self.min_masks} must be >= 0"))
        if self.overlap and self.min_space:
            errors.append(FieldError("min_space", f"{self.min_space} frames between spans needs overlap: false "
                                                  "(overlapping spans keep no space; set min_space: 0 or overlap: false)"))  # fmt: skip
        if (self.schedule == "linear") != (self.prob_end is not None):
            errors.append(FieldError("prob_end", "give prob_end exactly when schedule is linear"))
        _raise_all(errors)

    def prob_at(self, step: int, steps: int) -> float:
        """The mask probability at 0-based ``step`` of ``steps``."""
        if self.schedule == "constant" or self.prob_end is None:
            return self.prob
        frac = step / max(steps - 1, 1)
        return self.prob + (self.prob_end - self.prob) * frac


@dataclass(frozen=True)
class LossConfig:
    """The training loss: layer-to-layer distillation, a task loss on ``data.labels``, or both.

    This is the view the trainers read, every field present; in the YAML each kind takes only its own
    fields (:data:`LOSS_KINDS`): ``alphabet`` only on ``ctc``, ``classes`` only on ``classification``,
    ``distill_weight`` only on the task kinds.

    Attributes:
        kind: ``layer_to_layer`` (distillation through the student's projection heads; hidden states
            directly with ``teacher: {kind: self}``), ``ctc`` (CTC over the characters of ``alphabet`` on
            the architecture's ``ctc`` head; blank is index 0, ``alphabet[i]`` is ``i + 1``) or
            ``classification`` (cross-entropy of a trainer-owned ``Linear(width, classes)`` on the
            mean-pooled encoder output).
        distill_weight: for the task kinds: the total loss is ``task + distill_weight * distillation``,
            the distillation being the layer-to-layer loss below (``layers``, ``weights``, ``distance``,
            ``masking``) from the recipe's ``teacher`` (USM-Lite-style QAT with self-distillation). Null:
            the task loss alone.
        layers: student layer -> teacher layer (0-based: layer ``i`` is the output of the ``i+1``-th
            block); default (``heads``) maps every student layer with a projection head to the same index;
            ``proportional`` maps student layer ``s`` of ``S`` to teacher layer ``round((s + 1) T / S) - 1``
            of ``T`` (the last to the last, whatever the depths: the mapping for students of searched depth).
        weights: one per mapped layer in student order; default 0.1 each and 1.0 for the last.
        distance: ``l2`` (per-frame mean squared error over the features) or ``l1_cosine``
            (DistilHuBERT: mean absolute error minus ``cosine_weight * log sigmoid(cos)``).
        cosine_weight: DistilHuBERT's lambda.
        masking: masking distillation; null for plain layer-to-layer distillation.
        alphabet: the CTC characters (transcripts are lower-cased; the head's vocab is ``len + 1``).
        classes: the class names in classifier order; default the sorted labels of ``data.labels``.
    """

    kind: Literal["layer_to_layer", "ctc", "classification"] = "layer_to_layer"
    distill_weight: float | None = None
    layers: Any = field(None, parse=_parse_layer_map, dump=_dump_layer_map)
    weights: tuple[float, ...] | None = field(None, ge=0)
    distance: Literal["l2", "l1_cosine"] = "l2"
    cosine_weight: float = field(1.0, ge=0)
    masking: MaskingConfig | None = None
    alphabet: str = DEFAULT_ALPHABET
    classes: tuple[str, ...] | None = None

    @property
    def distills(self) -> bool:
        """Whether the loss has a layer-to-layer distillation part (alone or next to a task loss)."""
        return self.kind == "layer_to_layer" or self.distill_weight is not None

    def check(self) -> None:
        errors = []
        if self.distill_weight is not None:
            if self.kind == "layer_to_layer":
                errors.append(FieldError("distill_weight", "layer_to_layer is distillation alone; distill_weight adds "
                                                           "distillation to a task loss (kind: ctc or classification)"))  # fmt: skip
            elif not self.distill_weight > 0:
                errors.append(FieldError("distill_weight", f"{self.distill_weight} must be positive "
                                                           "(leave it out, and the teacher, for the task loss alone)"))  # fmt: skip
        if not self.distills:
            for name in ("layers", "weights", "masking"):
                if getattr(self, name) is not None:
                    errors.append(FieldError(name, f"only allowed with distillation: kind layer_to_layer, or a task "
                                                   f"loss with distill_weight (this loss is {self.kind} alone)"))  # fmt: skip
        if self.classes is not None and self.kind != "classification":
            errors.append(FieldError("classes", "only allowed with kind: classification"))
        elif self.classes is not None and (len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)):
            errors.append(FieldError("classes", f"{list(self.classes)} must be at least two distinct names"))
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            errors.append(FieldError("alphabet", f"{self.alphabet!r} must be non-empty characters, each once"))
        if self.weights is not None and isinstance(self.layers, tuple) and len(self.weights) != len(self.layers):
            errors.append(FieldError("weights", f"{len(self.weights)} weights for {len(self.layers)} mapped layers"))
        if self.weights is not None and not all(w >= 0 for w in self.weights):
            errors.append(FieldError("weights", f"{list(self.weights)} holds a negative weight"))
        if not self.cosine_weight >= 0:
            errors.append(FieldError("cosine_weight", f"{self.cosine_weight} must be at least 0"))
        _raise_all(errors)


# -- the loss kinds: each holds only the fields that apply to it -----------------------------------------


@dataclass(frozen=True)
class _DistillFields:
    """The layer-to-layer distillation part (alone, or next to a task loss with ``distill_weight``)."""

    layers: Any = field(None, parse=_parse_layer_map, dump=_dump_layer_map)
    weights: tuple[float, ...] | None = field(None, ge=0)
    distance: Literal["l2", "l1_cosine"] = "l2"
    cosine_weight: float = field(1.0, ge=0)
    masking: MaskingConfig | None = None


@dataclass(frozen=True)
class LayerToLayerLossFields(_DistillFields):
    """``loss: {kind: layer_to_layer, layers, weights, distance, cosine_weight, masking}``."""


@dataclass(frozen=True)
class CtcLossFields(_DistillFields):
    """``loss: {kind: ctc, alphabet, distill_weight, ...the distillation fields}``."""

    distill_weight: float | None = None
    alphabet: str = DEFAULT_ALPHABET


@dataclass(frozen=True)
class ClassificationLossFields(_DistillFields):
    """``loss: {kind: classification, classes, distill_weight, ...the distillation fields}``."""

    distill_weight: float | None = None
    classes: tuple[str, ...] | None = None


#: The YAML fields of each loss kind (a missing ``kind`` reads as ``layer_to_layer``).
LOSS_KINDS: dict[str, type] = {
    "layer_to_layer": LayerToLayerLossFields,
    "ctc": CtcLossFields,
    "classification": ClassificationLossFields,
}

_LOSS_HINTS = {
    "distill_weight": "layer_to_layer is distillation alone; distill_weight adds distillation to a task loss "
                      "(kind: ctc or classification)",
    "alphabet": "only allowed with kind: ctc (the CTC characters)",
    "classes": "only allowed with kind: classification (the class names)",
}  # fmt: skip


def _parse_loss(value: Any, path: str) -> LossConfig:
    if isinstance(value, dict) and "kind" not in value:
        value = {"kind": "layer_to_layer", **value}
    own = _parse_kind_hinted(LOSS_KINDS, value, path, "loss", _LOSS_HINTS)
    kind = value if isinstance(value, str) else value["kind"]
    cfg = LossConfig(kind, **{f.name: getattr(own, f.name) for f in dataclasses.fields(own)})
    try:
        cfg.check()
    except FieldError as err:
        raise err.prefixed(path) from None
    return cfg


def _dump_loss(cfg: LossConfig) -> dict[str, Any]:
    return {"kind": cfg.kind, **_own_fields(LOSS_KINDS[cfg.kind], cfg)}


def _parse_betas(value: Any, path: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise FieldError(path, f"{value!r} is not two numbers in [0, 1) (AdamW's beta1, beta2)")
    out = []
    for i, b in enumerate(value):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:  # NaN fails the range
            raise FieldError(join(path, i), f"{b!r} is not a number in [0, 1)")
        out.append(float(b))
    return tuple(out)


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW (``torch.optim.AdamW``).

    Attributes:
        fused: torch's fused AdamW kernel (``fused=True``: one pass over each tensor, on the CPU and on
            GPUs). Besides being faster in general, it avoids the single-tensor implementation's
            ``exp_avg_sq.sqrt()``, which on the CPU runs about 14 times slower on zeros than on other values:
            every N:M-pruned weight has a zero second moment, so that was half an int4 + 2:4 step's optimizer
            time (``benchmarks/compression.py``). ``false``: the single-tensor implementation.
    """

    kind: Literal["adamw"] = "adamw"
    lr: float = field(2.0e-4, gt=0)
    betas: tuple[float, ...] = field((0.9, 0.98), parse=_parse_betas, dump=list)
    eps: float = field(1.0e-6, gt=0)
    weight_decay: float = field(0.0, ge=0)
    clip_norm: float | None = field(10.0, gt=0)
    fused: bool = True

    def check(self) -> None:
        errors = []
        if not self.lr > 0:
            errors.append(FieldError("lr", f"{self.lr} must be positive"))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            errors.append(FieldError("betas", f"{list(self.betas)} is not two numbers in [0, 1)"))
        _raise_all(errors)


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warmup over ``warmup_ratio`` of the steps, then ``kind`` decay to ``final_ratio * lr``
    (``final_ratio`` only for the decaying kinds, ``linear`` and ``cosine``)."""

    kind: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = field(0.07, ge=0, lt=1)
    final_ratio: float = field(0.0, ge=0, le=1)

    def check(self) -> None:
        errors = []
        if not 0 <= self.warmup_ratio < 1:
            errors.append(FieldError("warmup_ratio", f"{self.warmup_ratio} is not in [0, 1)"))
        if not 0 <= self.final_ratio <= 1:
            errors.append(FieldError("final_ratio", f"{self.final_ratio} is not in [0, 1]"))
        _raise_all(errors)


def _parse_schedule(value: Any, path: str) -> ScheduleConfig:
    cfg = from_data(ScheduleConfig, value, path)
    if cfg.kind == "constant" and "final_ratio" in value:
        raise FieldError(join(path, "final_ratio"), "only allowed with the decaying kinds (linear, cosine); "
                                                    "kind: constant keeps lr after the warmup")  # fmt: skip
    return cfg


#: The DeepSpeed engine's config under the name it had before the engine kinds (``trainers.engine`` and
#: older code import it).
DeepSpeedConfig = DeepSpeedEngineConfig


def _parse_engine(value: Any, path: str) -> EngineConfig:
    """``torch`` or ``{kind: deepspeed, zero_stage: 2, precision: bf16}`` -> the kind's config (format 2)."""
    return _parse_kind_hinted(ENGINE_KINDS, value, path, "training engine", ENGINE_HINTS)


@dataclass(frozen=True)
class LoggingConfig:
    every: int = field(50, ge=1)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = field(1000, ge=1)
    keep: int = field(2, ge=1)


@dataclass(frozen=True)
class CompressionConfig:
    """How the trainer drives the architecture's compression (QAT / N:M fine-tuning).

    The quantizers and masks come from the architecture's ``compression`` section (prune, then quantize
    the kept weights); this only sets ``model.mask_schedule.config``, whose ``step()`` the trainer calls
    after every optimizer step.

    Attributes:
        schedule: ``one_shot`` (masks from the first forward pass, then frozen) or ``few_shot``
            (recomputed every training step until ``steps`` = USM-Lite's ``T_p`` optimizer steps).
        steps: ``T_p`` for ``few_shot``.
        sr_ste: SR-STE decay for pruned weights; null: pruned weights get no gradient.
    """

    schedule: Literal["one_shot", "few_shot"] = "one_shot"
    steps: int = field(0, ge=0)
    sr_ste: float | None = field(None, ge=0)

    def check(self) -> None:
        self.sparsity_schedule()

    def sparsity_schedule(self) -> Any:
        """The :class:`planner.compress.SparsitySchedule` (its own checks give the field errors)."""
        from planner.compress import SparsitySchedule

        return SparsitySchedule(self.schedule, steps=self.steps, sr_ste=self.sr_ste)


@dataclass(frozen=True)
class SupernetConfig:
    """How ``planner supernet train`` trains a space's supernet (the sandwich rule; :mod:`trainers.supernet`).

    Attributes:
        random: random candidates trained each step besides the largest and the smallest (BigNAS: 2).
        cover: random candidates of the space in the cover the shared tensors are shaped by, besides the
            one-value-at-a-time extremes (:func:`planner.search.supernet_cover`).
        recalibrate: training batches that re-estimate a candidate's batch-norm statistics before it is
            scored (OFA); 0 keeps the fresh statistics.
        partition: the label of one of the space's choices (``block``, ``width``): the sandwich trains the
            largest and the smallest of each of its values every step, not only the space's (a few-shot
            partition; :class:`planner.search.SpaceSampler`); null: the space's largest and smallest.
    """

    random: int = field(2, ge=0, le=64)
    cover: int = field(256, ge=0, le=100_000)
    recalibrate: int = field(4, ge=0, le=1_000)
    partition: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A whole recipe file. ``base_dir`` (not in the file) anchors relative paths; ``source`` (not in the
    file either) is the file it was read from, so that errors found later name it (:func:`recipe_error`);
    ``source_format`` is the format that file was written in (a format-1 file reads into the same recipe as
    its format-2 twin; only the field paths of later errors follow the file, :meth:`engine_field`).

    ``init`` is a state dict the student starts from (a float checkpoint goes onto the compressed leaves,
    as ``planner.compress.load_checkpoint_`` maps it); ``compression`` drives the mask schedule; ``engine``
    is one of :data:`ENGINE_KINDS` (``recipe.engine.kind``, and that kind's own fields).
    """

    data: DataConfig
    teacher: TeacherConfig | None = field(None, parse=_parse_teacher, dump=_dump_teacher)
    init: str | None = None
    compression: CompressionConfig | None = None
    supernet: SupernetConfig | None = None
    loss: LossConfig = field(LossConfig(), parse=_parse_loss, dump=_dump_loss)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = field(ScheduleConfig(), parse=_parse_schedule)
    steps: int = field(200_000, ge=1)
    engine: EngineConfig = field(TorchEngineConfig(), parse=_parse_engine, dump=dump_engine)
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    # torch.manual_seed takes 64 bits, numpy 32; the trainer also adds a step count to it
    seed: int = field(0, ge=0, lt=2**32)
    format: int = FORMAT_VERSION
    base_dir: str = dataclasses.field(default=".", init=False, compare=False)
    source: str | None = dataclasses.field(default=None, init=False, compare=False)
    source_format: int = dataclasses.field(default=FORMAT_VERSION, init=False, compare=False)

    def check(self) -> None:
        errors = []
        if self.format != FORMAT_VERSION:
            errors.append(FieldError("format", f"{self.format} is not the recipe format of a Recipe "
                                               f"({FORMAT_VERSION}; a format-1 file is converted on reading)"))  # fmt: skip
        if not self.steps >= 1:
            errors.append(FieldError("steps", f"{self.steps} must be positive"))
        if self.loss.kind == "layer_to_layer" and self.teacher is None:
            errors.append(FieldError("teacher", "distillation (loss.kind: layer_to_layer) needs a teacher"))
        if self.loss.distill_weight is not None and self.teacher is None:
            errors.append(FieldError("loss.distill_weight", f"{self.loss.distill_weight} weighs a distillation loss, "
                                                            "which needs a teacher: section (e.g. {kind: self, checkpoint: float.pt})"))  # fmt: skip
        if not self.loss.distills and self.teacher is not None:
            errors.append(FieldError("teacher", f"loss.kind {self.loss.kind} trains on labels and takes no teacher; "
                                                "to add distillation to it, set loss.distill_weight (task + weight * distillation)"))  # fmt: skip
        if self.loss.kind != "layer_to_layer" and self.data.labels is None:
            errors.append(FieldError("data.labels", f"loss.kind {self.loss.kind} needs a labels file (path<TAB>label)"))
        if self.loss.kind == "layer_to_layer" and self.data.valid_labels is not None:
            errors.append(
                FieldError("data.valid_labels", "only used by the task losses (loss.kind: ctc or classification)")
            )
        if self.loss.kind == "layer_to_layer" and self.data.labels is not None:
            errors.append(FieldError("data.labels", "only used by the task losses (loss.kind: ctc or classification); "
                                                    "layer_to_layer distillation reads no labels"))  # fmt: skip
        if self.supernet is not None and self.loss.kind != "layer_to_layer":
            errors.append(FieldError("supernet", f"a supernet is trained by distillation (loss.kind: layer_to_layer), "
                                                 f"not {self.loss.kind}"))  # fmt: skip
        if self.teacher is not None and self.teacher.kind == "self" and self.teacher.checkpoint is None:
            errors.append(
                FieldError("teacher.checkpoint", "kind: self needs the float weights (a torch.save'd state dict)")
            )
        _raise_all(errors)

    def resolve(self, path: str | None) -> str | None:
        """``path`` made absolute against the recipe's folder (None stays None)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    def engine_field(self, name: str) -> str:
        """The path of the engine's field ``name`` in the file the recipe was read from: ``deepspeed.NAME`` in
        format 1 (its ``deepspeed:`` section), ``engine.NAME`` in format 2."""
        return join("deepspeed" if self.source_format == 1 else "engine", name)

    def fingerprint(self) -> str:
        """A hash of the resolved settings (what makes two runs the same run).

        It hashes the recipe as format 1 laid it out, whichever format the file is in, so that a run started
        before format 2 still resumes and the same settings written in either format are the same run:
        ``engine`` the kind's name, ``deepspeed`` the DeepSpeed engine's fields (their defaults for another
        engine, as format 1 held them), ``format: 1``; an engine kind added later with fields of its own adds
        them as ``engine_fields``. Every field of the flat loss and teacher configs is hashed, as the recipe
        dump did before the kinds held only their own fields; fields added later are left out at their default.
        """
        data = _full(self)
        fields = _full(self.engine)
        data["engine"] = self.engine.kind
        data["deepspeed"] = fields if self.engine.kind == "deepspeed" else _full(DeepSpeedEngineConfig())
        if fields and self.engine.kind != "deepspeed":
            data["engine_fields"] = fields
        data["format"] = 1
        for (*parents, name), default in _LATER_FIELDS.items():
            node = data
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and name in node and node[name] == default:
                del node[name]
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def with_init(recipe: Recipe, init: str) -> Recipe:
    """``recipe`` starting from the weights ``init`` (``planner train --init``): another run than the recipe's
    own (the fingerprint holds ``init``); errors still name the recipe file."""
    out = dataclasses.replace(recipe, init=init)
    for name in ("base_dir", "source", "source_format"):
        object.__setattr__(out, name, getattr(recipe, name))
    return out


def recipe_error(recipe: Recipe, path: str, message: str) -> ConfigError:
    """The error for a recipe value found wrong after loading (a missing file, a value the model rejects),
    named ``RECIPE: field.path: message``; raise it.

    Example:
        >>> from trainers import load_recipe
        >>> print(recipe_error(load_recipe("recipes/distill.yaml"), "steps", "too many"))  # doctest: +ELLIPSIS
        recipes/distill.yaml: steps: too many
    """
    return ConfigError([FieldError(path, message)], recipe.source)


# the top-level keys field paths start with (and format 1's deepspeed section, named by engine errors)
_SECTIONS = frozenset(f.name for f in dataclasses.fields(Recipe) if f.init) | {"deepspeed"}


@contextmanager
def recipe_errors(recipe: Recipe) -> Iterator[None]:
    """Names the recipe file on the field errors raised inside (a :class:`FieldError`, or a
    :class:`ConfigError` without a file, whose paths all start with a recipe section such as ``loss.``).

    Example:
        >>> with recipe_errors(recipe):  # doctest: +SKIP
        ...     pairs = layer_pairs(recipe.loss, heads, teacher_layers)   # FieldError("loss.weights", ...)
    """

    def ours(errors: list[FieldError]) -> bool:
        return bool(errors) and all(e.path.split(".")[0].split("[")[0] in _SECTIONS for e in errors)

    try:
        yield
    except ConfigError as err:
        if err.source is None and recipe.source is not None and ours(err.errors):
            raise err.with_source(recipe.source) from err
        raise
    except FieldError as err:
        if ours(err.errors):
            raise ConfigError([err], recipe.source) from err
        raise


def recipe_files(recipe: Recipe) -> list[tuple[str, str | None]]:
    """``(field path, resolved path)`` of every file the recipe names; ``None`` where a file is required but
    not given (a teacher's ``checkpoint``)."""
    files: list[tuple[str, str | None]] = []
    if recipe.teacher is not None:
        files.append(("teacher.checkpoint", recipe.resolve(recipe.teacher.checkpoint)))
        if recipe.teacher.arch is not None:
            files.append(("teacher.arch", recipe.resolve(recipe.teacher.arch)))
    files += [(f"data.train[{i}]", recipe.resolve(p)) for i, p in enumerate(recipe.data.train)]
    for name in ("valid", "labels", "valid_labels"):
        if getattr(recipe.data, name) is not None:
            files.append((f"data.{name}", recipe.resolve(getattr(recipe.data, name))))
    if recipe.init is not None:
        files.append(("init", recipe.resolve(recipe.init)))
    return files


def check_recipe_files(recipe: Recipe) -> None:
    """Checks that every file the recipe names exists (nothing is read); call it before a run starts.

    Raises:
        ConfigError: one ``RECIPE: field: PATH does not exist`` line per missing file, all at once.
    """
    errors = []
    for where, path in recipe_files(recipe):
        path = os.path.normpath(path) if path is not None else None
        if path is None:
            errors.append(FieldError(where, "a teacher needs its weights (a torch.save'd state dict)"))
        elif os.path.isdir(path):
            errors.append(FieldError(where, f"{path} is a folder, not a file"))
        elif not os.path.isfile(path):
            errors.append(FieldError(where, f"{path} does not exist"))
    if errors:
        raise ConfigError(errors, recipe.source)


_FORMAT_1_ENGINES = ("deepspeed", "torch")  # format 1's engine names (its Literal); later kinds need format 2


def _read_format_1(data: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """A format-1 document as format-2 data: ``engine: NAME`` and a ``deepspeed:`` section become one
    ``engine: {kind: NAME, ...}`` mapping. The errors of those two sections are named where the file has them
    (``deepspeed.zero_stage``); the rest of the document is the same in both formats."""
    out = {k: v for k, v in data.items() if k not in ("format", "engine", "deepspeed")}
    errors: list[FieldError] = []
    engine = data.get("engine", "torch")
    allowed = ", ".join(_FORMAT_1_ENGINES)
    if isinstance(engine, dict):
        errors.append(FieldError("engine", "an engine mapping ({kind: NAME, ...its fields}) is the format-2 layout, and this "
                                           "recipe is format 1 (a file without format: reads as 1); set format: 2 to keep "
                                           f"the mapping, or name the engine ({allowed}) with DeepSpeed's settings in a "
                                           "deepspeed: section"))  # fmt: skip
        engine = None
    elif not isinstance(engine, str) or engine not in _FORMAT_1_ENGINES:
        errors.append(FieldError("engine", f"{engine!r} is not an engine of recipe format 1 (allowed: {allowed}; "
                                           f"format 2 has the kinds {', '.join(sorted(ENGINE_KINDS))})"))  # fmt: skip
        engine = None
    if "deepspeed" in data and engine == "torch":
        errors.append(FieldError("deepspeed", "only allowed with engine: deepspeed (this recipe's engine is torch); "
                                              "remove the section or set engine: deepspeed"))  # fmt: skip
    elif "deepspeed" in data and engine is not None:
        section = data["deepspeed"]
        try:
            from_data(DeepSpeedEngineConfig, section, "deepspeed")
        except FieldError as err:
            errors += err.errors
        else:
            out["engine"] = {"kind": engine, **section}
    elif engine is not None:
        out["engine"] = engine
    return out, errors


def _read_format_2(data: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """A format-2 document without its ``format:`` key, and the refusal of a format-1 ``deepspeed:`` section."""
    out = {k: v for k, v in data.items() if k not in ("format", "deepspeed")}
    if "deepspeed" not in data:
        return out, []
    return out, [FieldError("deepspeed", "not a section of recipe format 2: DeepSpeed's settings are fields of the engine "
                                         "(engine: {kind: deepspeed, zero_stage: 2, precision: bf16}); the deepspeed: "
                                         "section is format 1's (a file without format:)")]  # fmt: skip


def recipe_from_dict(data: Any, source: str | None = None, base_dir: str | None = None) -> Recipe:
    """Validates plain data of either format (:data:`FORMAT_VERSIONS`; no ``format:`` is 1) into a :class:`Recipe`.

    Example:
        >>> data = {"train": "a.tsv", "labels": "l.tsv"}
        >>> one = recipe_from_dict({"data": data, "loss": "ctc", "engine": "deepspeed", "deepspeed": {"zero_stage": 2}})
        >>> two = recipe_from_dict({"format": 2, "data": data, "loss": "ctc", "engine": {"kind": "deepspeed", "zero_stage": 2}})
        >>> one == two and one.fingerprint() == two.fingerprint()
        True

    Raises:
        ConfigError: ``FILE: field.path: problem``, one line per problem, every problem of the file at once
            (an unknown ``format`` alone: the layout of the rest is unknown too).
    """
    errors: list[FieldError] = []
    version = data.get("format", 1) if isinstance(data, dict) else FORMAT_VERSION
    if type(version) is not int or version not in FORMAT_VERSIONS:
        versions = ", ".join(map(str, FORMAT_VERSIONS))
        raise ConfigError([FieldError("format", f"{version!r} is not a recipe format this planner reads ({versions}; "
                                                f"{FORMAT_VERSION} is the current one, a file without format: is 1)")],
                          source) from None  # fmt: skip
    if isinstance(data, dict):
        data, errors = _read_format_1(data) if version == 1 else _read_format_2(data)
        data["format"] = FORMAT_VERSION  # the reader converted it
    try:
        recipe = from_data(Recipe, data)
    except FieldError as err:
        errors = [*err.errors, *(e for e in errors if e.path not in {x.path for x in err.errors})]
    if errors:
        raise ConfigError(errors, source) from None
    object.__setattr__(recipe, "base_dir", base_dir or (str(Path(source).parent) if source else "."))
    object.__setattr__(recipe, "source", source)
    object.__setattr__(recipe, "source_format", version)
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Loads and validates a recipe file.

    Example:
        >>> from trainers import load_recipe
        >>> load_recipe("recipes/distill.yaml").loss.masking.prob
        0.8
    """
    p = Path(path)
    return recipe_from_dict(read_yaml(p), str(path), str(p.resolve().parent))


def loads_recipe(text: str, source: str | None = None, base_dir: str | None = None) -> Recipe:
    """Loads a recipe from YAML text (relative paths against ``base_dir``)."""
    from planner.config import parse_yaml

    return recipe_from_dict(parse_yaml(text, source), source, base_dir)


def _full(obj: Any) -> Any:
    """Every field of the flat configs as plain data (what the fingerprint hashes): the loss and the teacher
    with the fields of every kind, not only their own (their field dumpers are left out for that)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            v = getattr(obj, f.name)
            kind_only = isinstance(obj, Recipe) and f.name in ("teacher", "loss")
            dump = None if kind_only else f.metadata.get("dump")
            out[f.name] = dump(v) if dump else _full(v)
        return out
    if isinstance(obj, tuple):
        return [_full(v) for v in obj]
    return obj


def dump_recipe(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain data in the current format (:data:`FORMAT_VERSION`, first): every
    field, defaults included, of the kinds chosen (a loss, teacher or engine kind's own fields), so it loads
    again into the same recipe.

    Example:
        >>> dump_recipe(load_recipe("recipes/distill.yaml"))["engine"]
        {'kind': 'torch'}
    """
    out: dict[str, Any] = {"format": FORMAT_VERSION}
    for f in dataclasses.fields(recipe):
        if not f.init or f.name == "format":
            continue
        v = getattr(recipe, f.name)
        if f.name == "supernet" and v is None:  # a section added later: absent unless used, as runs recorded it
            continue
        dump = f.metadata.get("dump")
        out[f.name] = dump(v) if dump else _full(v)
    return out
