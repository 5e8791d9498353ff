"""Loading torchaudio wav2vec 2.0 / HuBERT weights into a materialized planner :class:`~planner.nn.Encoder`.

The source is a ``torchaudio.models.Wav2Vec2Model`` (as built by ``torchaudio.models.hubert_base()``,
``wav2vec2_base()``..., or imported from fairseq / Hugging Face with
``torchaudio.models.wav2vec2.utils.import_fairseq_model`` / ``import_huggingface_model``), or its state dict.
Node indices are looked up in ``model.graph`` by kind, never hard-coded; ``E``, ``P``, ``N``, ``M`` and
``C`` below are the names of the unique ``conv_extractor``, ``conv_pos_embedding``, ``layer_norm``,
``mask_embedding`` and ``ctc`` nodes (``frontend.0``...).

=================================================  ===============================================
torchaudio state-dict key                          planner state-dict key
=================================================  ===============================================
``feature_extractor.conv_layers.{i}.conv.*``       ``{E}.conv_layers.{i}.conv.*``
``feature_extractor.conv_layers.{i}.layer_norm.*`` ``{E}.conv_layers.{i}.layer_norm.*``
``encoder.feature_projection.layer_norm.*``        ``{E}.layer_norm.*`` (``output_norm: true``)
``encoder.feature_projection.projection.*``        ``{E}.projection.*`` (``projection: true``)
``encoder.transformer.pos_conv_embed.conv.*``      ``{P}.conv.*``
``encoder.transformer.layer_norm.*``               ``{N}.layer_norm.*`` (in ``frontend`` for post-LN
                                                   models, in ``post`` for pre-LN ones)
``encoder.transformer.layers.{n}.*``               ``layers.{n}.*`` (the same names below)
``mask_generator.mask_embedding``                  ``{M}.embedding`` (``HuBERTPretrainModel``; read
                                                   from fairseq's ``mask_emb``, Hugging Face's
                                                   ``masked_spec_embed``)
``aux.*``                                          ``{C}.linear.*`` (a fine-tuned model's CTC output)
=================================================  ===============================================

Two other checkpoint layouts are read as torchaudio's first (:func:`torchaudio_state_dict`): fairseq's
(``HubertModel`` / ``Wav2Vec2Model`` ``model`` state, e.g. ``hubert_base_ls960.pt``; key names as
``torchaudio.models.wav2vec2.utils.import_fairseq`` maps them) and Hugging Face's (``HubertModel`` /
``Wav2Vec2Model``, as ``import_huggingface`` maps them). Both keep HuBERT's learned mask embedding, which
torchaudio's importers and ``Wav2Vec2Model`` drop: fairseq's ``mask_emb`` and Hugging Face's
``masked_spec_embed`` become ``mask_generator.mask_embedding``. Two spellings are normalised too: a
``wav2vec2.`` or ``hubert.`` prefix (a ``torchaudio.models.HuBERTPretrainModel``, a Hugging Face model with a
head) is dropped, and the ``weight_g``/``weight_v`` of the legacy ``torch.nn.utils.weight_norm`` become
``parametrizations.weight.original0/1``. If the target convolution
has no weight norm (``weight_norm: false``), a weight-normalised source is folded into a plain ``weight``.

A model that ``planner.materialize`` compressed (a graph with ``compression:`` rules) takes the same float
checkpoint: ``X.weight`` goes to ``X.parametrizations.weight.original``, and the compression state (quantizer
scales and observers, N:M masks, binarizer ``alpha``/``beta``) is neither expected nor touched. Load before
the first forward pass, which calibrates the quantizers and computes the masks from the weights.

Every mismatch is collected and reported together in one :class:`~planner.errors.WeightMappingError`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from planner.errors import WeightMappingError

if TYPE_CHECKING:
    from planner.nn import Encoder

__all__ = [
    "MASK_EMBEDDING_KEY",
    "checkpoint_layout",
    "load_torchaudio_weights",
    "load_checkpoint_file",
    "map_torchaudio_state_dict",
    "read_state_dict",
    "torchaudio_state_dict",
]

#: Where a torchaudio-layout state dict holds HuBERT's mask embedding (``HuBERTPretrainModel.mask_generator``).
MASK_EMBEDDING_KEY = "mask_generator.mask_embedding"

_CONV = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(.+)$")
_LAYER = re.compile(r"^encoder\.transformer\.layers\.(\d+)\.(.+)$")
_LEGACY_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_SHOWN = 10  # keys listed per category in an error message
# State that compression (planner.compress) adds to a model: quantizer scales and observers, N:M masks,
# BiT's binarizer parameters. A float checkpoint has none of it; it stays as compression initialised it.
_COMPRESSION_STATE = re.compile(r"(^|\.)(parametrizations\.weight\.\d+|input_quantizer|mask_schedule)\.")


def _unique_node(model: Encoder, kind: str) -> str | None:
    """Name of the one node of ``kind`` in the model's graph, None if it has none."""
    names = [n.name for n in model.graph.nodes() if n.kind == kind]
    if len(names) > 1:
        raise WeightMappingError(f"{model.graph.name}: the graph has {len(names)} {kind} nodes ({', '.join(names)}); "
                                 "a torchaudio model has one, so the weights cannot be mapped")  # fmt: skip
    return names[0] if names else None


def _target_key(key: str, nodes: dict[str, str | None]) -> str | None:
    """The planner key of one torchaudio key, or None if the key has no place in this graph."""

    def under(kind: str, rest: str) -> str | None:
        return f"{nodes[kind]}.{rest}" if nodes[kind] is not None else None

    if m := _CONV.match(key):
        return under("conv_extractor", f"conv_layers.{m[1]}.{m[2]}")
    if m := _LAYER.match(key):
        return f"layers.{m[1]}.{m[2]}"
    for prefix, kind, rest in (
        ("encoder.feature_projection.", "conv_extractor", ""),
        ("encoder.transformer.pos_conv_embed.conv.", "conv_pos_embedding", "conv."),
        ("encoder.transformer.layer_norm.", "layer_norm", "layer_norm."),
        ("aux.", "ctc", "linear."),
    ):
        if key.startswith(prefix):
            return under(kind, rest + key[len(prefix) :])
    if key == MASK_EMBEDDING_KEY:
        return under("mask_embedding", "embedding")
    return None


# fairseq names -> torchaudio names (fairseq's conv block i is Sequential(conv, dropout, norm, GELU); the norm
# is a GroupNorm in block 0 for extractor_mode default, Sequential(TransposeLast, LayerNorm, TransposeLast)
# in every block for layer_norm)
_FAIRSEQ_KEYS = [(re.compile(a), b) for a, b in (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.0\.2\.(weight|bias)$", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^post_extract_proj\.(weight|bias)$", r"encoder.feature_projection.projection.\1"),
    (r"^layer_norm\.(weight|bias)$", r"encoder.feature_projection.layer_norm.\1"),
    (r"^encoder\.pos_conv\.0\.(.+)$", r"encoder.transformer.pos_conv_embed.conv.\1"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.transformer.layer_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.((?:k|v|q|out)_proj\.(?:weight|bias))$", r"encoder.transformer.layers.\1.attention.\2"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"encoder.transformer.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$", r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$", r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"encoder.transformer.layers.\1.final_layer_norm.\2"),
    (r"^proj\.(weight|bias)$", r"aux.\1"),  # a fine-tuned model's w2v_encoder.proj
    (r"^mask_emb$", MASK_EMBEDDING_KEY),
)]  # fmt: skip
# Hugging Face names -> torchaudio names (the feature extractor's are the same)
_HF_KEYS = [(re.compile(a), b) for a, b in (
    (r"^feature_projection\.(.+)$", r"encoder.feature_projection.\1"),
    (r"^encoder\.(.+)$", r"encoder.transformer.\1"),
    (r"^lm_head\.(.+)$", r"aux.\1"),
    (r"^masked_spec_embed$", MASK_EMBEDDING_KEY),
)]  # fmt: skip
# pre-training heads no encoder has: fairseq HuBERT's label embeddings and projection, wav2vec 2.0's quantizer
_FAIRSEQ_PRETRAINING = ("label_embs_concat", "final_proj.", "target_glu.", "quantizer.", "project_q.", "project_inp.")


def checkpoint_layout(keys: Any) -> str:
    """``fairseq``, ``huggingface`` or ``torchaudio``: whose key names a state dict (its ``keys``) uses."""
    keys = list(keys)
    if any(k == "mask_emb" or k.startswith(("post_extract_proj.", "encoder.pos_conv.", "w2v_encoder."))
           or ".self_attn." in k for k in keys):  # fmt: skip
        return "fairseq"
    if any(k == "masked_spec_embed" or k.startswith(("feature_projection.", "encoder.pos_conv_embed.", "lm_head."))
           or re.match(r"^encoder\.layers\.\d+\.attention\.", k) for k in keys):  # fmt: skip
        return "huggingface"
    return "torchaudio"


def torchaudio_state_dict(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A wav2vec 2.0 / HuBERT state dict in torchaudio's key names, and the layout it came in.

    fairseq and Hugging Face layouts are renamed (see the module docstring); their mask embedding goes to
    :data:`MASK_EMBEDDING_KEY`, fairseq's pre-training heads are dropped. Keys with no counterpart are kept
    as they are, so a loader reports them. A torchaudio state dict only loses a ``wav2vec2.`` prefix.

    Example:
        >>> import torch
        >>> state, layout = torchaudio_state_dict({"mask_emb": torch.zeros(4), "post_extract_proj.bias": torch.zeros(4)})
        >>> layout, sorted(state)
        ('fairseq', ['encoder.feature_projection.projection.bias', 'mask_generator.mask_embedding'])
    """
    prefixed = [k for k in state if not k.startswith(("mask_generator.", "logit_generator.", "lm_head."))]
    for prefix in ("wav2vec2.", "hubert."):
        if prefixed and all(k.startswith(prefix) for k in prefixed):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            break
    layout = checkpoint_layout(state)
    if layout == "torchaudio":
        return dict(state), layout
    table = _FAIRSEQ_KEYS if layout == "fairseq" else _HF_KEYS
    out: dict[str, Any] = {}
    for key, value in state.items():
        if layout == "fairseq":
            key = key.removeprefix("w2v_encoder.").removeprefix("w2v_model.")
            if key.startswith(_FAIRSEQ_PRETRAINING):
                continue
        for pattern, target in table:
            if pattern.match(key):
                key = pattern.sub(target, key)
                break
        out[key] = value
    return out, layout


def _normalise(state: Mapping[str, Any]) -> dict[str, Tensor]:
    state, _ = torchaudio_state_dict(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        head, _, last = key.rpartition(".")
        if last in _LEGACY_WN:
            key = f"{head}.{_LEGACY_WN[last]}"
        out[key] = value
    return out


def _adapt(key: str, target: Mapping[str, Tensor]) -> str:
    """``X.weight`` becomes ``X.parametrizations.weight.original`` where compression parametrized ``X``."""
    renamed = key.removesuffix("weight") + "parametrizations.weight.original"
    return renamed if key.endswith(".weight") and key not in target and renamed in target else key


def _fold_weight_norm(mapped: dict[str, tuple[str, Tensor]], target: Mapping[str, Tensor]) -> None:
    """Replaces ``original0/1`` by a plain ``weight`` where the target conv has no weight norm."""
    for key in [k for k in mapped if k.endswith(".parametrizations.weight.original0")]:
        base = key.removesuffix(".parametrizations.weight.original0")
        v_key = f"{base}.parametrizations.weight.original1"
        if key not in target and v_key in mapped and _adapt(f"{base}.weight", target) in target:
            (_, g), (source, v) = mapped.pop(key), mapped.pop(v_key)
            # torchaudio normalises over every dim but the kernel's (dim=2)
            mapped[_adapt(f"{base}.weight", target)] = (source, torch._weight_norm(v, g, 2))


def _map(model: Encoder, source: nn.Module | Mapping[str, Any]) -> tuple[dict[str, tuple[str, Tensor]], list[str]]:
    """``({planner key: (torchaudio key, tensor)}, unmapped torchaudio keys)``."""
    state = source.state_dict() if isinstance(source, nn.Module) else source
    nodes = {k: _unique_node(model, k) for k in ("conv_extractor", "conv_pos_embedding", "layer_norm",
                                                   "mask_embedding", "ctc")}  # fmt: skip
    target = model.state_dict()
    mapped: dict[str, tuple[str, Tensor]] = {}
    unexpected: list[str] = []
    for key, value in _normalise(state).items():
        planner_key = _target_key(key, nodes)
        if planner_key is None:
            unexpected.append(key)
        else:
            mapped[_adapt(planner_key, target)] = (key, value)
    _fold_weight_norm(mapped, target)
    return mapped, unexpected


def map_torchaudio_state_dict(
    model: Encoder, source: nn.Module | Mapping[str, Any]
) -> tuple[dict[str, Tensor], list[str]]:
    """Translates a torchaudio wav2vec 2.0 / HuBERT state dict into ``model``'s key names.

    Args:
        model: the materialized planner encoder (its ``graph`` locates the nodes).
        source: a ``torchaudio.models.Wav2Vec2Model`` (or any module with the same state-dict names) or its
            state dict.

    Returns:
        ``(mapped, unexpected)``: the tensors under planner keys, and the source keys with no place in the
        graph.
    """
    mapped, unexpected = _map(model, source)
    return {k: v for k, (_, v) in mapped.items()}, unexpected


def _listing(title: str, items: list[str]) -> str:
    more = [f"    ... and {len(items) - _SHOWN} more"] if len(items) > _SHOWN else []
    return "\n".join([f"  {len(items)} {title}:", *(f"    {item}" for item in items[:_SHOWN]), *more])


def load_torchaudio_weights(model: Encoder, source: nn.Module | Mapping[str, Any], strict: bool = True) -> None:
    """Copies torchaudio wav2vec 2.0 / HuBERT weights into ``model`` in place (see the module docstring).

    Args:
        model: a materialized planner encoder whose graph mirrors the torchaudio model.
        source: a ``torchaudio.models.Wav2Vec2Model`` or its state dict.
        strict: if True, every parameter and buffer of ``model`` (compression state aside) must be given and
            every source key must find a place; if False, missing and unexpected keys are tolerated. Shape
            mismatches always fail.

    Raises:
        WeightMappingError: listing the missing, unexpected and mis-shaped keys; ``model`` is left unchanged.

    Example:
        >>> import planner, torchaudio
        >>> from planner.pretrained import load_torchaudio_weights
        >>> model = planner.materialize(planner.load("studies/hubert-base.yaml")).eval()
        >>> load_torchaudio_weights(model, torchaudio.models.hubert_base())
    """
    mapped, unexpected = _map(model, source)
    target = model.state_dict()
    missing = [k for k in target if k not in mapped and not _COMPRESSION_STATE.search(k)]
    unexpected += [f"{src} (the model has no {k})" for k, (src, _) in mapped.items() if k not in target]
    mismatched = [f"{k} <- {src}: checkpoint {tuple(v.shape)}, model {tuple(target[k].shape)}"
                  for k, (src, v) in mapped.items() if k in target and v.shape != target[k].shape]  # fmt: skip
    problems = []
    if mismatched:
        problems.append(_listing("shape mismatches (planner key <- torchaudio key)", mismatched))
    if strict and missing:
        problems.append(_listing("missing in the checkpoint (planner keys)", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected in the checkpoint (torchaudio keys)", unexpected))
    if problems:
        raise WeightMappingError(f"the weights do not fit the architecture {model.graph.name!r} "
                                 "(compare the architecture file with the checkpoint's model):\n"
                                 + "\n".join(problems))  # fmt: skip
    usable = {k: v for k, (_, v) in mapped.items() if k in target}
    with torch.no_grad():
        model.load_state_dict(usable, strict=False)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Reads a state dict: a ``.safetensors`` file (the weights a Pareto export inherits from a supernet), or
    a ``torch.save``'d one with ``weights_only=True``, unwrapping ``{"state_dict": ...}`` or ``{"model": ...}``.

    Raises:
        FileNotFoundError: no such file.
        WeightMappingError: the file cannot be read or holds no state dict.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        if not os.path.exists(path):
            raise FileNotFoundError(path)
        try:
            return dict(load_file(str(path)))
        except Exception as err:  # safetensors' own error types for a damaged file
            raise WeightMappingError(
                f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:200]})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:  # a pickle holding code or objects: refused before any of it runs
        raise WeightMappingError(f"{path} cannot be read as data, a state dict of tensors (torch.load with weights_only=True "
                                 "refuses it: a corrupt file, or pickled objects, which are never loaded; save one "
                                 "with torch.save(model.state_dict(), PATH))") from None  # fmt: skip
    except (OSError, RuntimeError, EOFError) as err:
        raise WeightMappingError(
            f"{path}: cannot read the checkpoint as data ({str(err).splitlines()[0][:200]})"
        ) from None
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightMappingError(f"{path}: expected a state dict (names to tensors), got {type(state).__name__}")
    return dict(state)


def load_checkpoint_file(model: Encoder, path: str | os.PathLike[str], strict: bool = True) -> None:
    """Loads a ``torch.save``'d torchaudio state dict file into ``model`` (see :func:`load_torchaudio_weights`).

    The file is read with ``weights_only=True``: a state dict (optionally wrapped as ``{"state_dict": ...}``
    or ``{"model": ...}``), not a pickled module.

    Raises:
        WeightMappingError: the file cannot be read, holds no state dict, or does not fit ``model``.
    """
    state = read_state_dict(path)
    try:
        load_torchaudio_weights(model, state, strict=strict)
    except WeightMappingError as err:
        raise WeightMappingError(f"{path}: {err}") from None
