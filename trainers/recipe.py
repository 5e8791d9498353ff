"""The training recipe: a frozen, typed mirror of a recipe YAML file (``recipes/distill.yaml``).

Layout (defaults in the dataclasses below follow DistilHuBERT / FitHuBERT / Recycle-and-Distill)::

    format: 1
    engine: torch                      # or deepspeed
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
    deepspeed: {zero_stage: 0, precision: fp32}
    logging: {every: 50}
    checkpoint: {every: 1000, keep: 2}
    seed: 0

Relative paths (teacher checkpoint and architecture, manifests) are resolved against the directory of
the recipe file, so a recipe and its data can move together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from planner.errors import ConfigError, FieldError
from planner.ir._schema import field, from_data, join
from planner.ir.io import read_yaml

__all__ = [
    "DEFAULT_ALPHABET",
    "FORMAT_VERSION",
    "CheckpointConfig",
    "DataConfig",
    "DeepSpeedConfig",
    "LoggingConfig",
    "LossConfig",
    "MaskingConfig",
    "OptimizerConfig",
    "Recipe",
    "ScheduleConfig",
    "TeacherConfig",
    "CompressionConfig",
    "dump_recipe",
    "load_recipe",
    "loads_recipe",
    "recipe_from_dict",
]

FORMAT_VERSION = 1

#: The CTC characters when a recipe or a probe task names none (blank is index 0, ``alphabet[i]`` is ``i + 1``).
DEFAULT_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"

# Fields added after runs were first written: left out of the fingerprint while at their default, so a run
# started before they existed still resumes with its unchanged recipe (run.json holds the older fingerprint).
_LATER_FIELDS = {("loss", "distill_weight"): None, ("optimizer", "fused"): True}


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


def _parse_overrides(value: Any, path: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, dict):
        raise FieldError(path, f"expected a mapping of torchaudio.models.wav2vec2_model arguments, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str):
            raise FieldError(path, f"{k!r} is not an argument name")
        if isinstance(v, list):
            value[k] = [tuple(x) if isinstance(x, list) else x for x in v]
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen teacher.

    Attributes:
        kind: ``torchaudio_hubert`` (``torchaudio.models.hubert_base``), ``torchaudio_wav2vec2``
            (``wav2vec2_base``), ``architecture`` (a planner architecture file, ``arch``) or ``self``
            (the student's own architecture in float, compression left out: self-distillation during
            QAT; hidden states are distilled layer to layer, no projection heads needed).
        checkpoint: a ``torch.save``'d state dict of that model (for ``architecture``, the planner
            model's own state dict or a torchaudio one mapped by ``planner.pretrained``).
        arch: the architecture file, for ``kind: architecture``.
        overrides: ``torchaudio.models.wav2vec2_model`` keyword arguments replacing the base
            configuration (e.g. ``encoder_num_layers``), for small or non-base torchaudio teachers.
    """

    kind: Literal["torchaudio_hubert", "torchaudio_wav2vec2", "architecture", "self"]
    checkpoint: str | None = None
    arch: str | None = None
    overrides: Any = field((), parse=_parse_overrides, dump=lambda v: {k: (list(x) if isinstance(x, tuple) else x) for k, x in v})

    def check(self) -> None:
        if self.kind == "architecture" and self.arch is None:
            raise FieldError("arch", "kind: architecture needs arch (a planner architecture file)")
        if self.kind != "architecture" and self.arch is not None:
            raise FieldError("arch", "only allowed with kind: architecture")
        if self.kind in ("architecture", "self") and self.overrides:
            raise FieldError("overrides", "only allowed with the torchaudio kinds")


@dataclass(frozen=True)
class DataConfig:
    """Audio manifests and batching.

    Attributes:
        train: fairseq-style manifest(s) (first line the root folder, then ``path<TAB>num_samples``).
        valid: held-out manifest (used by the distillation proxy and ``planner evaluate``).
        batch_seconds: audio per batch, padding included (length-bucketed batches).
        max_seconds: longer utterances are cropped (a random window, seeded) to this length.
        min_seconds: shorter utterances are skipped.
        sample_rate: audio is resampled to this rate.
        labels: ``path<TAB>label`` per line (paths relative to the first train manifest's root folder) for
            the task losses: a transcript for ``ctc``, a class name for ``classification``.
    """

    train: tuple[str, ...] = field(parse=_parse_paths)
    valid: str | None = None
    batch_seconds: float = 120.0
    max_seconds: float = 15.0
    min_seconds: float = 0.5
    sample_rate: int = 16000
    labels: str | None = None

    def check(self) -> None:
        for name in ("batch_seconds", "max_seconds", "sample_rate"):
            if getattr(self, name) <= 0:
                raise FieldError(name, f"{getattr(self, name)} must be positive")
        if self.min_seconds < 0 or self.min_seconds > self.max_seconds:
            raise FieldError("min_seconds", f"{self.min_seconds} must be between 0 and max_seconds ({self.max_seconds})")
        if self.batch_seconds < self.max_seconds:
            raise FieldError("batch_seconds", f"{self.batch_seconds} is less than max_seconds ({self.max_seconds}); "
                                              "a batch must hold at least the longest utterance")  # fmt: skip


@dataclass(frozen=True)
class MaskingConfig:
    """HuBERT-style span masking for masking distillation (Recycle-and-Distill eq. 6).

    ``prob`` is HuBERT's ``mask_prob``: each utterance of ``n`` frames gets ``int(prob * n / span + u)``
    span starts (``u`` uniform in [0, 1), at least ``min_masks``), so about ``prob`` of the frames before
    overlaps. ``schedule: linear`` moves it from ``prob`` to ``prob_end`` over the run (the paper's "sch").
    """

    prob: float = 0.8
    span: int = 10
    schedule: Literal["constant", "linear"] = "constant"
    prob_end: float | None = None
    min_masks: int = 2

    def check(self) -> None:
        for name in ("prob", "prob_end"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise FieldError(name, f"{v} is not in (0, 1]")
        if self.span < 1:
            raise FieldError("span", f"{self.span} must be positive")
        if self.min_masks < 0:
            raise FieldError("min_masks", f"{self.min_masks} must be >= 0")
        if (self.schedule == "linear") != (self.prob_end is not None):
            raise FieldError("prob_end", "give prob_end exactly when schedule is linear")

    def prob_at(self, step: int, steps: int) -> float:
        """The mask probability at 0-based ``step`` of ``steps``."""
        if self.schedule == "constant" or self.prob_end is None:
            return self.prob
        frac = step / max(steps - 1, 1)
        return self.prob + (self.prob_end - self.prob) * frac


@dataclass(frozen=True)
class LossConfig:
    """The training loss: layer-to-layer distillation, a task loss on ``data.labels``, or both.

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
    weights: tuple[float, ...] | None = None
    distance: Literal["l2", "l1_cosine"] = "l2"
    cosine_weight: float = 1.0
    masking: MaskingConfig | None = None
    alphabet: str = DEFAULT_ALPHABET
    classes: tuple[str, ...] | None = None

    @property
    def distills(self) -> bool:
        """Whether the loss has a layer-to-layer distillation part (alone or next to a task loss)."""
        return self.kind == "layer_to_layer" or self.distill_weight is not None

    def check(self) -> None:
        if self.distill_weight is not None:
            if self.kind == "layer_to_layer":
                raise FieldError("distill_weight", "layer_to_layer is distillation alone; distill_weight adds "
                                                   "distillation to a task loss (kind: ctc or classification)")  # fmt: skip
            if not self.distill_weight > 0:
                raise FieldError("distill_weight", f"{self.distill_weight} must be positive "
                                                   "(leave it out, and the teacher, for the task loss alone)")  # fmt: skip
        if not self.distills:
            for name in ("layers", "weights", "masking"):
                if getattr(self, name) is not None:
                    raise FieldError(name, f"only allowed with distillation: kind layer_to_layer, or a task loss "
                                           f"with distill_weight (this loss is {self.kind} alone)")  # fmt: skip
        if self.classes is not None and self.kind != "classification":
            raise FieldError("classes", "only allowed with kind: classification")
        if self.classes is not None and (len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)):
            raise FieldError("classes", f"{list(self.classes)} must be at least two distinct names")
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise FieldError("alphabet", f"{self.alphabet!r} must be non-empty characters, each once")
        if self.weights is not None and isinstance(self.layers, tuple) and len(self.weights) != len(self.layers):
            raise FieldError("weights", f"{len(self.weights)} weights for {len(self.layers)} mapped layers")
        if self.weights is not None and any(w < 0 for w in self.weights):
            raise FieldError("weights", f"{list(self.weights)} holds a negative weight")


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
    lr: float = 2.0e-4
    betas: tuple[float, ...] = (0.9, 0.98)
    eps: float = 1.0e-6
    weight_decay: float = 0.0
    clip_norm: float | None = 10.0
    fused: bool = True

    def check(self) -> None:
        if self.lr <= 0:
            raise FieldError("lr", f"{self.lr} must be positive")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise FieldError("betas", f"{list(self.betas)} is not two numbers in [0, 1)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warmup over ``warmup_ratio`` of the steps, then ``kind`` decay to ``final_ratio * lr``."""

    kind: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.07
    final_ratio: float = 0.0

    def check(self) -> None:
        if not 0 <= self.warmup_ratio < 1:
            raise FieldError("warmup_ratio", f"{self.warmup_ratio} is not in [0, 1)")
        if not 0 <= self.final_ratio <= 1:
            raise FieldError("final_ratio", f"{self.final_ratio} is not in [0, 1]")


@dataclass(frozen=True)
class DeepSpeedConfig:
    """DeepSpeed engine settings (``engine: deepspeed``; see :mod:`trainers.engine` for what runs where).

    Attributes:
        zero_stage: 0 (data parallel), 1 (optimizer state partitioned), 2 (+ gradients), 3 (+ parameters).
        precision: ``fp32``; ``bf16`` (16-bit weights and activations, fp32 master weights, no loss
            scaling); ``fp16`` (the same with dynamic loss scaling). Only parameters become 16-bit;
            buffers (quantizer scales, N:M masks, flags) keep their dtypes. A precision the machine's
            DeepSpeed accelerator lacks (fp16 on most CPUs) is refused when the run starts, naming this
            field, not here: the same recipe may run elsewhere.
    """

    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


@dataclass(frozen=True)
class LoggingConfig:
    every: int = 50

    def check(self) -> None:
        if self.every < 1:
            raise FieldError("every", f"{self.every} must be positive")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1000
    keep: int = 2

    def check(self) -> None:
        if self.every < 1:
            raise FieldError("every", f"{self.every} must be positive")
        if self.keep < 1:
            raise FieldError("keep", f"{self.keep} must be positive")


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
    steps: int = 0
    sr_ste: float | None = None

    def check(self) -> None:
        self.sparsity_schedule()

    def sparsity_schedule(self) -> Any:
        """The :class:`planner.compress.SparsitySchedule` (its own checks give the field errors)."""
        from planner.compress import SparsitySchedule

        return SparsitySchedule(self.schedule, steps=self.steps, sr_ste=self.sr_ste)


@dataclass(frozen=True)
class Recipe:
    """A whole recipe file. ``base_dir`` (not in the file) anchors relative paths.

    ``init`` is a state dict the student starts from (a float checkpoint goes onto the compressed leaves,
    as ``planner.compress.load_checkpoint_`` maps it); ``compression`` drives the mask schedule.
    """

    data: DataConfig
    teacher: TeacherConfig | None = None
    init: str | None = None
    compression: CompressionConfig | None = None
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    steps: int = 200_000
    engine: Literal["torch", "deepspeed"] = "torch"
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    seed: int = 0
    format: int = FORMAT_VERSION
    base_dir: str = dataclasses.field(default=".", init=False, compare=False)
    source: str | None = dataclasses.field(default=None, init=False, compare=False)  # the file, for errors

    def check(self) -> None:
        if self.format != FORMAT_VERSION:
            raise FieldError("format", f"{self.format} is not a supported recipe format (this planner reads {FORMAT_VERSION})")
        if self.steps < 1:
            raise FieldError("steps", f"{self.steps} must be positive")
        if self.loss.kind == "layer_to_layer" and self.teacher is None:
            raise FieldError("teacher", "distillation (loss.kind: layer_to_layer) needs a teacher")
        if self.loss.distill_weight is not None and self.teacher is None:
            raise FieldError("loss.distill_weight", f"{self.loss.distill_weight} weighs a distillation loss, "
                                                    "which needs a teacher: section (e.g. {kind: self, checkpoint: float.pt})")  # fmt: skip
        if not self.loss.distills and self.teacher is not None:
            raise FieldError("teacher", f"loss.kind {self.loss.kind} trains on labels and takes no teacher; to add "
                                        "distillation to it, set loss.distill_weight (task + weight * distillation)")  # fmt: skip
        if self.loss.kind != "layer_to_layer" and self.data.labels is None:
            raise FieldError("data.labels", f"loss.kind {self.loss.kind} needs a labels file (path<TAB>label)")
        if self.teacher is not None and self.teacher.kind == "self" and self.teacher.checkpoint is None:
            raise FieldError("teacher.checkpoint", "kind: self needs the float weights (a torch.save'd state dict)")
        if self.engine == "torch" and self.deepspeed != DeepSpeedConfig():
            raise FieldError("deepspeed", "deepspeed settings need engine: deepspeed")

    def resolve(self, path: str | None) -> str | None:
        """``path`` made absolute against the recipe's folder (None stays None)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    def fingerprint(self) -> str:
        """A hash of the resolved settings (what makes two runs the same run)."""
        data = dump_recipe(self)
        for (section, name), default in _LATER_FIELDS.items():
            if data[section][name] == default:
                del data[section][name]
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def recipe_from_dict(data: Any, source: str | None = None, base_dir: str | None = None) -> Recipe:
    """Validates plain data into a :class:`Recipe`.

    Raises:
        ConfigError: ``FILE: field.path: problem``.
    """
    try:
        recipe = from_data(Recipe, data)
    except FieldError as err:
        raise ConfigError([err], source) from None
    object.__setattr__(recipe, "base_dir", base_dir or (str(Path(source).parent) if source else "."))
    object.__setattr__(recipe, "source", source)
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
    from planner.ir.io import _parse_yaml

    return recipe_from_dict(_parse_yaml(text, source), source, base_dir)


def dump_recipe(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain data (every field, defaults included)."""

    def full(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            out = {}
            for f in dataclasses.fields(obj):
                if not f.init:
                    continue
                dump = f.metadata.get("dump")
                v = getattr(obj, f.name)
                out[f.name] = dump(v) if dump else full(v)
            return out
        if isinstance(obj, tuple):
            return [full(v) for v in obj]
        return obj

    return full(recipe)
