"""Packed export of a compressed model and its exact reload.

A packed directory holds three files:

* ``architecture.yaml``: the architecture (:func:`planner.dump`), compression rules included.
* ``weights.safetensors``: every tensor of the model. A compressed weight ``P.weight`` is stored as parts:
  ``P.weight.values`` (int8 codes as int8 bytes; int4 / int2 / binary codes bit-packed into uint8, the first
  value in the lowest bits; fp16 / fp32 values as such; with N:M sparsity only the kept values, row-major),
  ``P.weight.mask`` (N:M: one bit per weight, packed), ``P.weight.scale`` (float32, ``(out, groups)`` or
  ``(1, 1)``) and ``P.weight.zero_point`` (asymmetric grids: uint8, ``(out, groups)``). Every other tensor
  is stored as it is in the state dict (floats are float32). A weight-normalised convolution is packed as its
  product ``g v / ||v||`` (what its compression receives); the loader sets ``v`` to it and ``g`` to ``||v||``.
* ``manifest.json``: the format name and version, each stored tensor's encoding, and the payload byte
  counts: ``weights`` (what inference needs and the cost model prices, see :mod:`planner.cost.storage`:
  parameters, batch-norm running statistics, BiT's ``alpha`` / ``beta``, integer input grids' scale and
  zero point) and ``state`` (training state it does not price: observer ranges, initialisation flags,
  batch counters, the mask clock).

A model that carries a :class:`TaskHead` (a run's classifier, or the CTC head's alphabet; see
:func:`trainers.evaluate.export_run`) adds a ``task`` entry to the manifest: its kind, classes or alphabet,
and the classifier's tensors (float32, in ``weights.safetensors`` under ``task_head.classifier.*``, counted
as ``payload_bytes.task``). They are listed there and not under ``tensors``, so a reader that predates task
heads loads the encoder as before; :func:`load_packed` puts the head back on ``model.task_head``.

An export is written as a whole: the three files go into a new folder beside ``out_dir``, are fsynced, and the
folder takes ``out_dir``'s place in one rename (:func:`planner.files.staged_dir`), so a kill or a full disk
leaves the previous export (or nothing) and never a mix. The reader treats the folder as data: the file
names in ``manifest.json`` must stay inside it, and the weights are safetensors (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from planner.compress._apply import CompressionError, FakeCompressedWeight, compressed_leaves
from planner.compress._pack import pack_bits, unpack_bits
from planner.compress._quant import (
    BinaryWeightQuantizer,
    ElasticBinarizer,
    HalfWeightQuantizer,
    IntActQuantizer,
    IntWeightQuantizer,
    dequantize,
)
from planner.errors import FieldError
from planner.files import confined, staged_dir, writing

__all__ = ["TaskHead", "export", "load_packed", "load_checkpoint_", "FORMAT", "VERSION"]

FORMAT = "planner-packed"
VERSION = 1
_WEIGHTS, _ARCH, _MANIFEST = "weights.safetensors", "architecture.yaml", "manifest.json"


_TASK_KINDS = ("classification", "ctc")
_HEAD = "task_head"


class TaskHead(nn.Module):
    """The task head a run trained, on top of an encoder's :class:`~planner.nn.model.EncoderOutput`.

    * ``classification``: ``classifier`` (``Linear(width, len(classes))``) on the encoder output mean-pooled
      over each utterance's valid frames; :meth:`decode` gives the class names.
    * ``ctc``: the architecture's own ``ctc`` head (``out.logits``, blank 0, ``alphabet[i]`` is class
      ``i + 1``); :meth:`decode` is greedy best-path decoding (repeats collapsed, blanks dropped).

    Args:
        kind: ``classification`` or ``ctc``.
        classes: the class names (classification).
        alphabet: the CTC characters (ctc).
        classifier: the trained ``nn.Linear`` (classification).

    Example:
        >>> model = planner.load_packed("packed/")                  # doctest: +SKIP
        >>> out = model(x, lengths)                                  # doctest: +SKIP
        >>> model.task_head.decode(out)                              # doctest: +SKIP
        ['seven', 'zero']
    """

    def __init__(self, kind: str, *, classes: list[str] | None = None, alphabet: str | None = None,
                 classifier: nn.Linear | None = None) -> None:  # fmt: skip
        super().__init__()
        if kind not in _TASK_KINDS:
            raise CompressionError(f"task head kind {kind!r} is not one of {', '.join(_TASK_KINDS)}")
        if kind == "classification":
            if not (classes and all(isinstance(c, str) for c in classes)) or not isinstance(classifier, nn.Linear):
                raise CompressionError("a classification head needs its class names and its nn.Linear classifier")
            if classifier.out_features != len(classes):
                raise CompressionError(
                    f"the classifier has {classifier.out_features} outputs for {len(classes)} classes"
                )
        elif not (isinstance(alphabet, str) and alphabet) or classifier is not None:
            raise CompressionError("a ctc head needs its alphabet (the architecture holds the head itself)")
        self.kind = kind
        self.classes = list(classes) if classes is not None else None
        self.alphabet = alphabet
        self.classifier = classifier

    def logits(self, out: Any) -> Tensor:
        """``(B, classes)`` class logits, or the ``(B, T, len(alphabet) + 1)`` CTC logits."""
        if self.kind == "ctc":
            return out.logits
        x, lengths = out.output, out.lengths
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        pooled = (x * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)
        return self.classifier(pooled)

    def decode(self, out: Any) -> list[str]:
        """One class name or transcript per utterance of the batch."""
        logits = self.logits(out)
        if self.kind == "classification":
            return [self.classes[i] for i in logits.argmax(-1).tolist()]
        best = logits.argmax(-1).cpu()
        texts = []
        for row, n in zip(best, out.lengths.cpu().tolist()):
            ids = torch.unique_consecutive(row[: int(n)]).tolist()
            texts.append("".join(self.alphabet[i - 1] for i in ids if i != 0))
        return texts

    def describe(self) -> dict[str, Any]:
        """The manifest's ``task`` entry without its tensors."""
        return {
            "kind": self.kind,
            **({"classes": self.classes} if self.kind == "classification" else {"alphabet": self.alphabet}),
        }


def _check_head(head: TaskHead, graph: Any, where: str) -> None:
    """Refuses a head that does not fit the architecture (a CTC alphabet for another vocabulary)."""
    if head.kind != "ctc":
        return
    ctc = [n for n in graph.nodes("heads") if n.kind == "ctc"]
    if not ctc:
        raise CompressionError(f"{where}: a ctc task head, but {graph.name} has no ctc head")
    if ctc[0].config.vocab != len(head.alphabet) + 1:
        raise CompressionError(f"{where}: the alphabet has {len(head.alphabet)} characters + blank, the ctc head of "
                               f"{graph.name} {ctc[0].config.vocab} classes")  # fmt: skip


def _read_head(src: Path, entry: Any, stored: dict[str, Tensor], graph: Any) -> TaskHead:
    """The manifest's ``task`` entry and its tensors as a :class:`TaskHead`."""
    where = f"{src / _MANIFEST}: task"
    if not isinstance(entry, dict) or entry.get("kind") not in _TASK_KINDS:
        raise CompressionError(f"{where}: expected {{kind: {' | '.join(_TASK_KINDS)}, ...}}")
    try:
        if entry["kind"] == "ctc":
            head = TaskHead("ctc", alphabet=entry.get("alphabet"))
        else:
            names = entry.get("tensors")
            if (
                not isinstance(names, dict)
                or set(names) != {"weight", "bias"}
                or not all(n in stored for n in names.values())
            ):
                raise CompressionError(f"{where}.tensors: expected the classifier's weight and bias in {_WEIGHTS}")
            weight, bias = stored[names["weight"]], stored[names["bias"]]
            if weight.dim() != 2 or tuple(bias.shape) != (weight.shape[0],):
                raise CompressionError(f"{where}.tensors: a weight {tuple(weight.shape)} and bias {tuple(bias.shape)} "
                                       "are not a linear layer's")  # fmt: skip
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.load_state_dict({"weight": weight, "bias": bias})
            head = TaskHead("classification", classes=entry.get("classes"), classifier=linear)
    except CompressionError as err:
        raise CompressionError(f"{where}: {err}" if not str(err).startswith(str(src)) else str(err)) from None
    _check_head(head, graph, where)
    return head


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _encode_weight(
    path: str, param: FakeCompressedWeight, original: Tensor
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Stored parts and manifest entry of one compressed weight."""
    comp = param.compression
    w = comp.weight
    with torch.no_grad():
        v = original.detach().reshape(param.out, param.fan_in)
        mask = None
        if param.sparsifier is not None:
            v = param.sparsifier(v)
            mask = param.sparsifier.mask
        q = param.quantizer
        parts: dict[str, Tensor] = {}
        entry: dict[str, Any] = {"shape": list(param.shape), "bits": w.bits, "granularity": w.granularity,
                                 "symmetric": w.symmetric, "sparsity": None if mask is None else str(comp.sparsity)}  # fmt: skip
        keep = (lambda t: t[mask]) if mask is not None else (lambda t: t.reshape(-1))  # noqa: E731
        if q is None or isinstance(q, HalfWeightQuantizer):
            dtype = torch.float32 if q is None else torch.float16
            parts["values"] = keep(v).to(dtype).contiguous()
            entry["encoding"] = "float32" if q is None else "float16"
        elif isinstance(q, BinaryWeightQuantizer):
            bits, scale, _ = q.codes(v, None if mask is None else mask.to(v.dtype))  # means over kept weights
            parts["values"] = pack_bits(keep(bits), 1)
            parts["scale"] = scale.to(torch.float32).contiguous()
            entry["encoding"] = "binary"
        elif isinstance(q, IntWeightQuantizer):
            codes, scale, zp = q.codes(v)
            codes = keep(codes)
            if w.bits == 8:
                parts["values"] = codes.to(torch.int8 if w.symmetric else torch.uint8).contiguous()
            else:
                parts["values"] = pack_bits(codes & ((1 << w.bits) - 1), w.bits)  # two's complement fields
            parts["scale"] = scale.to(torch.float32).contiguous()
            if zp is not None:
                parts["zero_point"] = zp.to(torch.uint8).contiguous()
            entry["encoding"] = f"int{w.bits}"
        else:  # pragma: no cover - every quantizer kind is handled above
            raise CompressionError(f"{path}: no packed encoding for {type(q).__name__}")
        if mask is not None:
            parts["mask"] = pack_bits(mask.reshape(-1), 1)
    entry["parts"] = {name: f"{path}.weight.{name}" for name in parts}
    return {f"{path}.weight.{name}": t for name, t in parts.items()}, entry


def _decode_weight(entry: dict[str, Any], parts: dict[str, Tensor], param: FakeCompressedWeight) -> Tensor:
    """The ``(out, fan_in)`` float32 weight a packed entry stands for (pins the quantizer's parameters)."""
    out, fan_in = param.out, param.fan_in
    numel = out * fan_in
    mask = None
    if "mask" in parts:
        mask = unpack_bits(parts["mask"], 1, numel).to(torch.bool).reshape(out, fan_in)
        param.sparsifier.mask.copy_(mask)
        param.sparsifier.ready.fill_(True)
    kept = numel if mask is None else int(mask.sum())

    def place(values: Tensor, fill: Tensor | float) -> Tensor:
        if mask is None:
            return values.reshape(out, fan_in)
        full = torch.empty(out, fan_in, dtype=values.dtype)
        full[...] = fill
        full[mask] = values
        return full

    enc = entry["encoding"]
    if enc in ("float32", "float16"):
        return place(parts["values"].to(torch.float32), 0.0)
    scale = parts["scale"]
    if enc == "binary":
        bits = place(unpack_bits(parts["values"], 1, kept), 1)
        w = torch.where(bits > 0, 1.0, -1.0) * scale
        param.quantizer.freeze(scale, None)
        return w if mask is None else w * mask
    nbits = int(entry["bits"])
    if nbits == 8:
        codes = parts["values"].to(torch.int64)
    else:
        codes = unpack_bits(parts["values"], nbits, kept)
        if entry["symmetric"]:
            codes = torch.where(codes >= 1 << (nbits - 1), codes - (1 << nbits), codes)  # sign-extend
    zp = parts.get("zero_point")
    groups = scale.shape[-1]
    if mask is not None:  # pruned positions decode to exactly 0: code = zero point
        fill = torch.zeros(out, fan_in, dtype=torch.int64)
        if zp is not None:
            fill = zp.to(torch.int64).repeat_interleave(fan_in // groups, dim=1).expand(out, fan_in)
        full = fill.clone()
        full[mask] = codes
        codes = full
    w = dequantize(
        codes.reshape(out, fan_in),
        scale.expand(out, groups),
        None if zp is None else zp.expand(out, groups),
        out,
        fan_in,
    )
    param.quantizer.freeze(scale, None if zp is None else zp.to(torch.float32))
    return w


def _weight_norm(mod: nn.Module) -> Any:
    """The ``_WeightNorm`` parametrization ahead of the compression on ``mod.weight``, or None."""
    plist = mod.parametrizations.weight
    return plist[0] if len(plist) == 2 and type(plist[0]).__name__ == "_WeightNorm" else None


def _uncompressed_weight(path: str, mod: nn.Module) -> Tensor:
    """The float weight the compression parametrization receives: the raw one, or ``g v / ||v||`` under
    weight normalisation (folded: the packed weight is the product, and ``g`` is not stored)."""
    plist = mod.parametrizations.weight
    if len(plist) == 1 and hasattr(plist, "original"):
        return plist.original
    norm = _weight_norm(mod)
    if norm is not None:
        return norm(plist.original0, plist.original1)
    raise CompressionError(f"{path}: the compressed weight has parametrizations "
                           f"{[type(p).__name__ for p in plist]} this format cannot pack")  # fmt: skip


def _set_uncompressed_weight(mod: nn.Module, path: str, w: Tensor, sd: dict[str, Tensor]) -> None:
    """State-dict entries that make ``mod``'s compression parametrization receive exactly ``w``.

    Under weight normalisation: ``v = w`` and ``g`` = the norms the weight-norm kernel itself computes for
    ``v`` (``torch._weight_norm_interface``), so that ``v * (g / ||v||)`` is ``v * 1.0``, bitwise ``w``.
    """
    norm = _weight_norm(mod)
    prefix = f"{path}.parametrizations.weight."
    if norm is None:
        sd[prefix + "original"] = w
        return
    g_shape = mod.parametrizations.weight.original0.shape
    _, norms = torch._weight_norm_interface(w, torch.ones(g_shape, dtype=w.dtype), norm.dim)
    sd[prefix + "original0"] = norms.reshape(g_shape)
    sd[prefix + "original1"] = w


def _priced_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the raw tensors :mod:`planner.cost.storage` prices: the parameters of the
    architecture, batch norm's running statistics, and what the input quantizers need at inference
    (BiT's ``alpha`` / ``beta``; an integer grid's scale and zero point). Not priced: training state
    (observer ranges, initialisation flags, batch counters, the mask clock)."""
    keys = set()
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(mod, (ElasticBinarizer, IntActQuantizer)):
            names = ("alpha", "beta") if isinstance(mod, ElasticBinarizer) else ("scale", "zero_point")
            keys.update(prefix + n for n in names)  # (their observers, children, hold buffers only)
            continue
        keys.update(prefix + n for n, _ in mod.named_parameters(recurse=False))
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            keys.update((prefix + "running_mean", prefix + "running_var"))
    return keys


def export(model: nn.Module, graph: Any, out_dir: str | os.PathLike[str], *, force: bool = False,
           task: TaskHead | None = None) -> dict[str, Any]:  # fmt: skip
    """Writes ``model`` packed to ``out_dir`` (``weights.safetensors``, ``architecture.yaml``, ``manifest.json``).

    Args:
        model: a materialized (and, if its plan is not empty, compressed) encoder of ``graph``.
        graph: its :class:`~planner.ir.EncoderGraph`.
        out_dir: target directory; created if missing.
        force: replace a non-empty directory (swapped whole: the old export stays until the new one is complete).
        task: the task head to pack with it (default: ``model.task_head``, which :func:`load_packed` sets).

    Returns:
        The manifest (also written as ``manifest.json``).

    Raises:
        CompressionError: ``out_dir`` is not empty and ``force`` is false, a weight cannot be packed, or the
            task head does not fit the architecture.
        WriteError: the disk is full, or a file is in the way (nothing already there is changed).

    Example:
        >>> import planner, tempfile
        >>> graph = planner.load("studies/usm-lite/small/int4.yaml")
        >>> model = planner.materialize(graph)
        >>> manifest = planner.export(model, graph, tempfile.mkdtemp())
        >>> manifest["format"], manifest["version"]
        ('planner-packed', 1)
    """
    from safetensors.torch import save

    from planner.ir import dump

    out = Path(out_dir)
    if task is None:
        task = getattr(model, _HEAD, None)
    if task is not None:
        _check_head(task, graph, str(out))
    if out.exists() and not out.is_dir():
        raise CompressionError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CompressionError(f"{out}: directory is not empty (pass --force / force=True to overwrite)")
    was_training = model.training
    model.eval()
    try:
        leaves = compressed_leaves(model)
        state = model.state_dict()
        tensors: dict[str, Tensor] = {}
        entries: dict[str, Any] = {}
        priced = _priced_keys(model)
        for path, (mod, param) in leaves.items():
            parts, entry = _encode_weight(path, param, _uncompressed_weight(path, mod))
            entry["role"] = "weights"
            tensors.update(parts)
            entries[f"{path}.weight"] = entry
        skip = tuple(f"{p}.parametrizations.weight." for p in leaves)
        for key, t in state.items():
            if key.startswith(skip) or key.startswith(f"{_HEAD}."):  # the head goes into the task entry
                continue
            t = t.detach().contiguous()
            if t.is_floating_point():
                t = t.to(torch.float32)
            counted = key in priced
            tensors[key] = t
            entries[key] = {"encoding": "raw", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                            "role": "weights" if counted else "state"}  # fmt: skip
    finally:
        model.train(was_training)
    payload = {"weights": 0, "state": 0}
    for key, entry in entries.items():
        names = entry["parts"].values() if "parts" in entry else [key]
        payload[entry["role"]] += sum(_nbytes(tensors[n]) for n in names)
    manifest = {"format": FORMAT, "version": VERSION, "architecture": _ARCH, "weights": _WEIGHTS,
                "payload_bytes": payload, "tensors": entries}  # fmt: skip
    if task is not None:
        entry = task.describe()
        if task.classifier is not None:
            names = {name: f"{_HEAD}.classifier.{name}" for name in ("weight", "bias")}
            for name, full in names.items():
                tensors[full] = getattr(task.classifier, name).detach().to(torch.float32).cpu().contiguous()
            entry["tensors"] = names
            payload["task"] = sum(_nbytes(tensors[n]) for n in names.values())
        manifest["task"] = entry
    # serialised in memory: safetensors' own writer reports a full disk as its own error type, not OSError
    data = save(tensors, metadata={"format": FORMAT, "version": str(VERSION)})
    with staged_dir(out) as tmp, writing(out):
        (tmp / _WEIGHTS).write_bytes(data)
        dump(graph, tmp / _ARCH)
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _member(src: Path, manifest: dict[str, Any], key: str, default: str) -> Path:
    """The file ``manifest[key]`` names, refused unless it is a relative name inside ``src``."""
    name = manifest.get(key, default)
    if not isinstance(name, str) or not name:
        raise CompressionError(f"{src / _MANIFEST}: {key}: {name!r} is not a file name (expected {default!r})")
    try:
        return confined(src, name, key)
    except FieldError as err:
        raise CompressionError(f"{src / _MANIFEST}: {err}") from None


def load_packed(out_dir: str | os.PathLike[str]) -> nn.Module:
    """Rebuilds the model a packed directory holds: ``planner.load`` + ``materialize`` + unpacked weights.

    Quantizer scales and zero points are pinned to the stored ones, so the weights the reloaded model
    computes are bitwise the fake-quantized weights of the exported model, and its eval-mode outputs equal
    the exported model's exactly. An export with a task head gives it back as ``model.task_head`` (a
    :class:`TaskHead`; None without one): ``model.task_head.decode(model(x, lengths))``.

    Raises:
        CompressionError: a missing file, another format or version, a file name in the manifest that leaves
            the folder, or tensors that do not fit the graph.
    """
    from safetensors.torch import load_file

    from planner.compress._materialize import materialize
    from planner.ir import load

    src = Path(out_dir)
    try:
        manifest = json.loads((src / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CompressionError(f"{src / _MANIFEST}: cannot read the manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise CompressionError(f"{src / _MANIFEST}: not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CompressionError(f"{src / _MANIFEST}: format {manifest.get('format')!r} version {manifest.get('version')!r} "
                               f"is not {FORMAT!r} version {VERSION}")  # fmt: skip
    tensors = manifest.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(e, dict) for e in tensors.values()):
        raise CompressionError(f"{src / _MANIFEST}: tensors: expected a mapping of tensor names to entries")
    graph = load(_member(src, manifest, "architecture", _ARCH))
    model = materialize(graph)
    weights = _member(src, manifest, "weights", _WEIGHTS)
    try:
        stored = load_file(str(weights))
    except Exception as err:  # safetensors' own error type: a damaged file, or one that is not safetensors
        raise CompressionError(f"{weights}: cannot read the weights as safetensors ({str(err)[:200]})") from None
    leaves = compressed_leaves(model)
    sd: dict[str, Tensor] = {}

    def get(name: Any) -> Tensor:
        if name not in stored:
            raise CompressionError(f"{weights}: lacks {name!r}, which {_MANIFEST} lists")
        return stored[name]

    with torch.no_grad():
        for key, entry in tensors.items():
            if "parts" not in entry:
                sd[key] = get(key)
                continue
            path = key.removesuffix(".weight")
            if path not in leaves:
                raise CompressionError(f"{src}: {key} is packed but the architecture does not compress {path}")
            mod, param = leaves[path]
            if not isinstance(entry["parts"], dict):
                raise CompressionError(f"{src / _MANIFEST}: tensors.{key}.parts: expected a mapping")
            parts = {name: get(full) for name, full in entry["parts"].items()}
            try:
                w = _decode_weight(entry, parts, param).reshape(param.shape)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                raise CompressionError(f"{src / _MANIFEST}: tensors.{key}: cannot decode it ({type(err).__name__}: "
                                       f"{str(err)[:200]})") from None  # fmt: skip
            _set_uncompressed_weight(mod, path, w, sd)
    full = model.state_dict()
    missing = [
        k for k in full if k not in sd and not any(k.startswith(f"{p}.parametrizations.weight.") for p in leaves)
    ]
    if missing:
        raise CompressionError(f"{src / _WEIGHTS}: lacks {len(missing)} tensors of the model, e.g. {missing[:3]}")
    full.update(sd)
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as err:
        raise CompressionError(f"{src / _WEIGHTS}: tensors do not fit the architecture ({err})") from err
    model.task_head = _read_head(src, manifest["task"], stored, graph) if "task" in manifest else None
    return model.eval()


def load_checkpoint_(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Loads a state dict into a (compressed) model; plain ``P.weight`` keys of a float checkpoint go to
    ``P.parametrizations.weight.original`` of compressed leaves. Strict otherwise."""
    leaves = compressed_leaves(model)
    mapped = {}
    for key, t in state.items():
        path = key.removesuffix(".weight")
        mapped[f"{path}.parametrizations.weight.original" if key.endswith(".weight") and path in leaves else key] = t
    own = model.state_dict()
    for key, t in own.items():  # quantizer / mask state a float checkpoint does not have: keep the fresh one
        if key not in mapped and (
            ".parametrizations.weight.0." in key or ".input_quantizer." in key or key.startswith("mask_schedule.")
        ):
            mapped[key] = t
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as err:
        raise CompressionError(f"checkpoint does not fit the architecture ({err})") from err
