"""The frozen teacher: a torchaudio wav2vec 2.0 / HuBERT model or a planner architecture.

Both return per-layer hidden states (layer ``i`` is the output of the ``i+1``-th transformer block) and
take an optional frame mask at their own extractor's frame rate:

* torchaudio teachers have no mask embedding in ``Wav2Vec2Model``. The masked teacher input is formed
  where HuBERT masks: after the feature projection, before the positional convolution, masked frames are
  replaced by HuBERT's learned mask embedding from the checkpoint: ``mask_generator.mask_embedding`` of a
  torchaudio ``HuBERTPretrainModel`` state dict, ``mask_emb`` of a fairseq one (``hubert_base_ls960.pt``'s
  ``model``), ``masked_spec_embed`` of a Hugging Face ``HubertModel`` (the checkpoint may be in any of the
  three layouts, :func:`planner.pretrained.torchaudio_state_dict`). A checkpoint without one (a plain
  ``Wav2Vec2Model`` / ``hubert_base()`` state dict) falls back to zeros, an input HuBERT never saw; with
  masking on, the loader warns once (one line on the ``trainers.teacher`` logger).
* planner teachers (waveform or features input: a features teacher computes its own filterbanks from the
  batch's audio, :class:`PlannerTeacher`) are run as ``model(x, lengths, mask=mask)``, so their own ``mask_embedding`` node
  replaces the frames; loaded from a torchaudio-style checkpoint it takes the checkpoint's mask embedding,
  or zeros with the same warning. A planner teacher without the node cannot be used with masking
  distillation.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from planner.compress import materialize
from planner.errors import ConfigError, FieldError, WeightMappingError
from planner.ir.io import load
from planner.nn import build
from planner.pretrained import MASK_EMBEDDING_KEY, load_torchaudio_weights, read_state_dict, torchaudio_state_dict
from trainers.masking import mask_frame_lengths
from trainers.recipe import Recipe, TeacherConfig, recipe_error

__all__ = [
    "Teacher",
    "TeacherOutput",
    "TorchaudioTeacher",
    "PlannerTeacher",
    "float_state",
    "load_teacher",
    "teacher_rate_error",
    "TORCHAUDIO_BASE",
]

_log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # checkpoints whose missing mask embedding was reported (once per process)

# torchaudio.models.hubert_base() / wav2vec2_base(): one architecture; dropouts are irrelevant in eval.
TORCHAUDIO_BASE: dict[str, Any] = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=None, extractor_conv_bias=False,
    encoder_embed_dim=768, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=128,
    encoder_pos_conv_groups=16, encoder_num_layers=12, encoder_num_heads=12, encoder_attention_dropout=0.0,
    encoder_ff_interm_features=3072, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
    encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
)  # fmt: skip


@dataclass
class TeacherOutput:
    """``hidden``: ``(B, T, D)`` per layer; ``lengths``: ``(B,)`` valid frames (every layer)."""

    hidden: list[Tensor]
    lengths: Tensor


class Teacher(nn.Module, abc.ABC):
    """Interface: ``forward(waveforms, lengths, mask=None) -> TeacherOutput`` with gradients off."""

    num_layers: int
    supports_mask: bool = True

    @abc.abstractmethod
    def mask_lengths(self, samples: Tensor) -> tuple[Tensor, int]:
        """Valid and padded frame counts where the teacher's mask acts, for ``(B,)`` sample lengths."""
        ...

    def train(self, mode: bool = True) -> Teacher:  # a teacher never leaves eval mode
        return super().train(False)


class TorchaudioTeacher(Teacher):
    """A ``torchaudio.models.Wav2Vec2Model`` teacher.

    Args:
        model: the torchaudio model (set to eval, gradients off).
        mask_embedding: ``(D,)`` vector for masked frames; None means zeros.
    """

    def __init__(self, model: nn.Module, mask_embedding: Tensor | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        dim = model.encoder.feature_projection.projection.out_features
        emb = mask_embedding if mask_embedding is not None else torch.zeros(dim)
        self.register_buffer("mask_embedding", emb.detach().float().clone())
        self.num_layers = len(model.encoder.transformer.layers)
        self._convs = [(blk.conv.kernel_size[0], blk.conv.stride[0]) for blk in model.feature_extractor.conv_layers]
        self.eval()

    def mask_lengths(self, samples: Tensor) -> tuple[Tensor, int]:
        lengths, padded = samples.clone(), int(samples.max())
        for k, s in self._convs:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
            padded = (padded - k) // s + 1
        return lengths.clamp(min=0), padded

    @torch.no_grad()
    def forward(
        self, waveforms: Tensor, lengths: Tensor, mask: Tensor | None = None, num_layers: int | None = None
    ) -> TeacherOutput:
        """Args: waveforms ``(B, samples)``; lengths ``(B,)``; mask ``(B, T)`` at the extractor rate."""
        x, out_lengths = self.model.feature_extractor(waveforms, lengths)
        x, attn = self.model.encoder._preprocess(x, out_lengths)
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask has shape {tuple(mask.shape)}, the teacher's frames are {tuple(x.shape[:2])}")
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        hidden = self.model.encoder.transformer.get_intermediate_outputs(x, attention_mask=attn, num_layers=num_layers)
        return TeacherOutput(list(hidden), out_lengths)


class PlannerTeacher(Teacher):
    """A materialized planner architecture as teacher.

    It is given the batch's waveforms, ``(B, samples)`` with ``(B,)`` valid samples. A features-input teacher
    (``input: {kind: features}``) computes its filterbanks from them as the student pipeline does
    (:func:`trainers.data.fbank_features` of each utterance's valid samples, with the teacher's own
    ``n_mels``, window and hop, zero-padded); its masks act at its own frame rate. ``same_input``: the
    student's input as it is (waveform or features), for a ``self`` teacher.
    """

    def __init__(self, model: nn.Module, same_input: bool = False) -> None:
        super().__init__()
        self.same_input = same_input
        self.model = model.eval().requires_grad_(False)
        self.graph = model.graph
        self.num_layers = len(model.layers)
        self.supports_mask = any(n.kind == "mask_embedding" for n in self.graph.nodes("frontend"))
        self.eval()

    def mask_lengths(self, samples: Tensor) -> tuple[Tensor, int]:
        return mask_frame_lengths(self.graph, samples)

    @torch.no_grad()
    def forward(
        self, waveforms: Tensor, lengths: Tensor, mask: Tensor | None = None, num_layers: int | None = None
    ) -> TeacherOutput:
        spec = self.graph.spec.input
        if spec.kind == "features" and not self.same_input:
            from trainers.data import fbank_features

            feats = [fbank_features(w[: int(n)].float(), spec) for w, n in zip(waveforms, lengths)]
            lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long, device=waveforms.device)
            waveforms = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(waveforms.dtype)
        out = self.model(waveforms, lengths, mask=mask)
        return TeacherOutput(list(out.hidden_states), out.hidden_lengths[-1])


def teacher_rate_error(graph: Any, recipe: Recipe) -> str | None:
    """Why a features-input teacher architecture cannot read the recipe's audio (None: it can): its filterbanks
    are computed at ``data.sample_rate``, so its ``input.sample_rate`` must be that rate."""
    spec = graph.spec.input
    if spec.kind == "features" and spec.sample_rate != recipe.data.sample_rate:
        return (f"{recipe.teacher.arch} computes filterbanks at input.sample_rate {spec.sample_rate} and the audio is "
                f"read at data.sample_rate {recipe.data.sample_rate}; set one to the other")  # fmt: skip
    return None


def _read_state(path: str, where: str, recipe: Recipe | None = None) -> dict[str, Tensor]:
    """The state dict at ``path``; a missing or unreadable file is an error naming the recipe and ``where``."""
    source = recipe.source if recipe is not None else None
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ConfigError([FieldError(where, f"{path} is empty (expected a torch.save'd state dict)")], source)
    try:
        return read_state_dict(path)
    except FileNotFoundError:
        raise ConfigError([FieldError(where, f"{path} does not exist")], source) from None
    except WeightMappingError as err:
        raise ConfigError([FieldError(where, str(err))], source) from None
    except (EOFError, ValueError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError([FieldError(where, f"{path}: cannot read the checkpoint ({why})")], source) from None


def _mismatch(recipe: Recipe, message: str) -> WeightMappingError:
    """A checkpoint that does not fit its teacher, named ``RECIPE: teacher.checkpoint: ...``."""
    return WeightMappingError(str(recipe_error(recipe, "teacher.checkpoint", message)))


def float_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A compressed model's state dict as the float model's: ``P.parametrizations.weight.original`` ->
    ``P.weight``; quantizer, mask and mask-clock state dropped. A float state dict is returned as is."""
    out = {}
    for key, t in state.items():
        if key.startswith("mask_schedule.") or ".parametrizations.weight.0." in key or ".input_quantizer." in key:
            continue
        suffix = ".parametrizations.weight.original"  # not original0/1: weight norm stays as it is
        out[key.removesuffix(suffix) + ".weight" if key.endswith(suffix) else key] = t
    return out


def _no_mask_embedding(recipe: Recipe, ckpt: str) -> None:
    """Warns, once per checkpoint and process, that masked frames reach the teacher as zeros."""
    if recipe.loss.masking is None or ckpt in _WARNED:
        return
    _WARNED.add(ckpt)
    _log.warning(f"teacher.checkpoint {ckpt} has no mask embedding (fairseq mask_emb, Hugging Face masked_spec_embed, "
                 f"torchaudio {MASK_EMBEDDING_KEY}): masked frames reach the teacher as zeros, an input HuBERT never "
                 "saw; give a checkpoint that keeps it (e.g. fairseq's hubert_base_ls960.pt model state)")  # fmt: skip


def load_teacher(recipe: Recipe, student: Any = None) -> Teacher:
    """Builds the recipe's teacher and loads its checkpoint (frozen, eval, no gradients).

    Args:
        recipe: the recipe.
        student: the student's :class:`~planner.ir.EncoderGraph`, for ``kind: self``.

    Raises:
        ConfigError: a missing or unreadable file, or an ``overrides`` argument torchaudio does not take, named
            ``RECIPE: teacher.FIELD: ...``.
        WeightMappingError: the checkpoint does not fit the teacher (named the same way).
    """
    cfg: TeacherConfig = recipe.teacher
    ckpt = recipe.resolve(cfg.checkpoint)
    if ckpt is None:
        raise recipe_error(recipe, "teacher.checkpoint", "a teacher needs its weights (a torch.save'd state dict)")
    if cfg.kind == "self":
        if student is None:
            raise recipe_error(recipe, "teacher.kind", "self needs the student architecture")
        model = build(student)  # the float twin of the (possibly compressed) student
        state = float_state(_read_state(ckpt, "teacher.checkpoint", recipe))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise _mismatch(recipe, f"{ckpt} does not fit the float {student.name} ({err})") from err
        return PlannerTeacher(model, same_input=True)
    if cfg.kind == "architecture":
        arch = recipe.resolve(cfg.arch)
        if not os.path.isfile(arch):
            raise recipe_error(recipe, "teacher.arch", f"{arch} does not exist")
        graph = load(arch)
        mismatch = teacher_rate_error(graph, recipe)
        if mismatch is not None:
            raise recipe_error(recipe, "teacher.arch", mismatch)
        model = materialize(graph)  # as its file says: a compressed teacher architecture keeps its quantizers
        state = _read_state(ckpt, "teacher.checkpoint", recipe)
        try:
            if set(state) == set(model.state_dict()):
                model.load_state_dict(state)
            else:
                state, _ = torchaudio_state_dict(state)
                embedding = [n for n in graph.nodes("frontend") if n.kind == "mask_embedding"]
                if not embedding:  # unused without the node (masking is refused for such a teacher)
                    state.pop(MASK_EMBEDDING_KEY, None)
                elif MASK_EMBEDDING_KEY not in state:
                    state[MASK_EMBEDDING_KEY] = torch.zeros(embedding[0].context.width)
                    load_torchaudio_weights(model, state)
                    _no_mask_embedding(recipe, ckpt)  # once the rest of the checkpoint fits
                    return PlannerTeacher(model)
                load_torchaudio_weights(model, state)
        except (RuntimeError, WeightMappingError) as err:
            raise _mismatch(recipe, f"{ckpt} does not fit the teacher {cfg.arch} ({err})") from err
        return PlannerTeacher(model)

    import torchaudio

    kwargs = dict(TORCHAUDIO_BASE)
    for key, value in cfg.overrides:
        if key not in kwargs:
            raise recipe_error(recipe, f"teacher.overrides.{key}",
                               f"not a torchaudio.models.wav2vec2_model argument (allowed: {', '.join(kwargs)})")  # fmt: skip
        kwargs[key] = value
    try:
        model = torchaudio.models.wav2vec2_model(**kwargs)
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        raise recipe_error(
            recipe, "teacher.overrides", f"torchaudio.models.wav2vec2_model rejects them ({err})"
        ) from err
    state, _ = torchaudio_state_dict(_read_state(ckpt, "teacher.checkpoint", recipe))
    mask_emb = state.pop(MASK_EMBEDDING_KEY, None)
    state = {k: v for k, v in state.items() if not k.startswith(("mask_generator.", "logit_generator."))}
    legacy = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
    state = {(k.rsplit(".", 1)[0] + "." + legacy[k.rsplit(".", 1)[1]] if k.rsplit(".", 1)[-1] in legacy else k): v
             for k, v in state.items()}  # fmt: skip
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise _mismatch(recipe, f"{ckpt}: the checkpoint does not fit a {cfg.kind} teacher ({err})") from err
    if result.missing_keys or result.unexpected_keys:
        raise _mismatch(recipe, f"{ckpt}: the checkpoint does not fit a {cfg.kind} teacher"
                                f"{' with overrides' if cfg.overrides else ''}: missing {result.missing_keys[:5]}, "
                                f"unexpected {result.unexpected_keys[:5]}")  # fmt: skip
    width = model.encoder.feature_projection.projection.out_features
    if mask_emb is None:
        _no_mask_embedding(recipe, ckpt)
    elif tuple(mask_emb.shape) != (width,):
        raise _mismatch(recipe, f"{ckpt}: the mask embedding has shape {tuple(mask_emb.shape)}, the teacher's frames "
                                f"are {width} wide (a checkpoint of another model?)")  # fmt: skip
    return TorchaudioTeacher(model, mask_emb)
