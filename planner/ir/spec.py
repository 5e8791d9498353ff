"""The architecture document: a frozen, typed mirror of an architecture YAML file.

Layout of a file (``kind`` plus keyword arguments everywhere; see ``docs/architecture-files.md``)::

    format: 1
    name: armhubert-s
    input: {kind: waveform, sample_rate: 16000}
    width: 432
    frontend: [ {kind: conv_extractor, ...}, {kind: mask_embedding}, ... ]
    layers:   [ {kind: transformer, repeat: 12, heads: 12, ffn: 816}, ... ]
    reuse: 2by6                      # or none, or an explicit list
    post:     [ {kind: layer_norm} ]
    heads:    [ {kind: projection_heads, width: 768} ]
    compression: [ {layers: 0-3, weight: int8}, ... ]

:func:`parse_spec` validates everything that can be checked without shapes and reports every problem
it finds at once; :mod:`planner.ir.graph` then checks shapes and references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from planner.config import field, from_data, join, to_data
from planner.errors import ConfigError, FieldError
from planner.ir.compression import CompressionRule
from planner.ir.kinds import NODE_KINDS, NodeKind
from planner.ir.kinds.base import MAX_LAYERS, MAX_WIDTH

__all__ = ["ArchSpec", "InputSpec", "Block", "parse_spec", "dump_spec", "FORMAT_VERSION", "SECTIONS", "MAX_SAMPLE_RATE"]

FORMAT_VERSION = 1
SECTIONS = ("frontend", "layers", "post", "heads")
_REUSE_NAME = re.compile(r"^([0-9]{1,4})by([0-9]{1,4})$")
MAX_SAMPLE_RATE = 1_000_000
"""The highest ``input.sample_rate`` (and filterbank window or hop, in samples) a file may give."""


@dataclass(frozen=True)
class InputSpec:
    """What the model takes.

    Attributes:
        kind: ``waveform`` (B, samples) or ``features`` (B, frames, n_mels) log-mel filterbanks.
        sample_rate: audio sample rate in Hz.
        n_mels: filterbank size, for ``features``.
        win_length: filterbank window in samples, for ``features``.
        hop_length: filterbank hop in samples, for ``features``.
    """

    kind: Literal["waveform", "features"] = "waveform"
    sample_rate: int = field(16000, le=MAX_SAMPLE_RATE)
    n_mels: int | None = field(None, le=MAX_WIDTH)
    win_length: int = field(400, le=MAX_SAMPLE_RATE)
    hop_length: int = field(160, le=MAX_SAMPLE_RATE)

    def check(self) -> None:
        if self.kind == "features" and (self.n_mels is None or self.n_mels < 1):
            raise FieldError("n_mels", "features input needs n_mels (a positive integer)")
        if self.kind == "waveform" and self.n_mels is not None:
            raise FieldError("n_mels", "only allowed with kind: features")
        for name in ("sample_rate", "win_length", "hop_length"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)} must be positive")

    def frames(self, samples: int) -> int:
        """Model input length for an utterance of ``samples`` samples (Kaldi-style framing for features)."""
        if self.kind == "waveform":
            return samples
        return 0 if samples < self.win_length else 1 + (samples - self.win_length) // self.hop_length


@dataclass(frozen=True)
class Block:
    """One entry of a section: a node config repeated ``repeat`` times."""

    node: Any  # a registered NodeKind dataclass
    repeat: int = 1


@dataclass(frozen=True)
class ArchSpec:
    """A whole architecture file."""

    name: str
    input: InputSpec
    width: int
    frontend: tuple[Block, ...]
    layers: tuple[Block, ...]
    reuse: str | tuple[int, ...] = "none"
    post: tuple[Block, ...] = ()
    heads: tuple[Block, ...] = ()
    compression: tuple[CompressionRule, ...] = ()
    format: int = FORMAT_VERSION

    def expanded(self, section: str) -> list[NodeKind]:
        """The nodes of a section with repeats expanded."""
        return [b.node for b in getattr(self, section) for _ in range(b.repeat)]


def _parse_block(data: Any, path: str, section: str) -> Block:
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a mapping with a kind, got {data!r}")
    kind = data.get("kind")
    if kind is None:
        raise FieldError(join(path, "kind"), f"required field is missing (allowed: {_kinds_for(section)})")
    if not isinstance(kind, str) or kind not in NODE_KINDS:
        raise FieldError(join(path, "kind"), f"unknown kind {kind!r} (allowed: {_kinds_for(section)})")
    cls = NODE_KINDS[kind]
    role = {"frontend": "frontend", "layers": "layer", "post": "post", "heads": "head"}[section]
    if role not in cls.roles:
        raise FieldError(join(path, "kind"), f"{kind} cannot appear in {section} (allowed: {_kinds_for(section)})")
    repeat = data.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise FieldError(join(path, "repeat"), f"{repeat!r} is not a positive integer")
    if repeat > MAX_LAYERS:
        raise FieldError(join(path, "repeat"), f"{repeat} exceeds the ceiling of {MAX_LAYERS} layers")
    if repeat > 1 and section != "layers":
        raise FieldError(join(path, "repeat"), "only entries of layers can repeat")
    rest = {k: v for k, v in data.items() if k not in ("kind", "repeat")}
    return Block(from_data(cls, rest, path), repeat)


def _kinds_for(section: str) -> str:
    role = {"frontend": "frontend", "layers": "layer", "post": "post", "heads": "head"}[section]
    return ", ".join(sorted(k for k, cls in NODE_KINDS.items() if role in cls.roles))


def _parse_reuse(value: Any, path: str) -> str | tuple[int, ...]:
    if isinstance(value, str):
        if value == "none" or _REUSE_NAME.match(value):
            return value
        raise FieldError(path, f"{value!r} is not a reuse pattern (allowed: none, AbyB such as 2by6, 3by4, 6by2, "
                         "or a list giving, per attention layer, the attention layer whose map it uses)")  # fmt: skip
    if value is None:
        return "none"
    if isinstance(value, list) and value:
        out = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FieldError(f"{path}[{i}]", f"{v!r} is not an attention-layer index")
            out.append(v)
        return tuple(out)
    raise FieldError(path, f"{value!r} is not a reuse pattern (allowed: none, 2by6, 3by4, 6by2, AbyB, or a list)")


_REQUIRED = {
    "name": "a non-empty string",
    "width": "a positive integer, the model width",
    "frontend": "a non-empty list of nodes",
    "layers": "a non-empty list of nodes",
}
_TOP_FIELDS = ("format", "name", "input", "width", "frontend", "layers", "reuse", "post", "heads", "compression")


def parse_spec(data: Any, source: str | None = None) -> ArchSpec:
    """Validates a parsed architecture document and returns its :class:`ArchSpec`.

    Raises:
        ConfigError: listing every problem found, each with its field path.
    """
    errors: list[FieldError] = []
    if data is None:
        raise ConfigError([FieldError("", "the file is empty (expected an architecture mapping with name, "
                                          "input, width, frontend and layers)")], source)  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError([FieldError("", f"expected a mapping at the top level, got {type(data).__name__}")], source)
    for key in data:
        if key not in _TOP_FIELDS:
            errors.append(FieldError(str(key), f"unknown field (allowed: {', '.join(_TOP_FIELDS)})"))
    fmt = data.get("format", FORMAT_VERSION)
    if isinstance(fmt, bool) or fmt != FORMAT_VERSION:
        errors.append(
            FieldError("format", f"{fmt!r} is not a supported format version (this planner reads {FORMAT_VERSION})")
        )

    def take(key: str, fn, default=None):  # noqa: ANN001, ANN202
        if key not in data:
            if default is None:
                errors.append(FieldError(key, f"required field is missing ({_REQUIRED[key]})"))
            return default
        try:
            return fn(data[key], key)
        except FieldError as err:
            errors.append(err)
            return default

    def name_of(v: Any, p: str) -> str:
        if not isinstance(v, str) or not v.strip():
            raise FieldError(p, f"expected a non-empty string, got {v!r}")
        return v

    def width_of(v: Any, p: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FieldError(p, f"expected a positive integer, got {v!r}")
        if v > MAX_WIDTH:
            raise FieldError(p, f"{v} exceeds the ceiling of {MAX_WIDTH} (the widest model width a file may give)")
        return v

    def section(key: str, required: bool):  # noqa: ANN202
        def parse(v: Any, p: str) -> tuple[Block, ...]:
            if not isinstance(v, list) or (required and not v):
                raise FieldError(p, f"expected a {'non-empty ' if required else ''}list of nodes, got {v!r}")
            blocks = []
            for i, item in enumerate(v):
                try:
                    blocks.append(_parse_block(item, join(p, i), key))
                except FieldError as err:
                    errors.append(err)
            return tuple(blocks)

        return take(key, parse, None if required else ())

    def rules(v: Any, p: str) -> tuple[CompressionRule, ...]:
        if not isinstance(v, list):
            raise FieldError(p, f"expected a list of rules, got {v!r}")
        out = []
        for i, item in enumerate(v):
            try:
                out.append(from_data(CompressionRule, item, join(p, i)))
            except FieldError as err:
                errors.append(err)
        return tuple(out)

    name = take("name", name_of)
    inp = take("input", lambda v, p: from_data(InputSpec, v, p), InputSpec()) if "input" in data else InputSpec()
    width = take("width", width_of)
    frontend = section("frontend", True)
    layers = section("layers", True)
    post = section("post", False)
    heads = section("heads", False)
    reuse = take("reuse", _parse_reuse, "none")
    compression = take("compression", rules, ())
    if layers and sum(b.repeat for b in layers) > MAX_LAYERS:
        errors.append(FieldError("layers", f"{sum(b.repeat for b in layers)} layers (repeats expanded) exceed the "
                                           f"ceiling of {MAX_LAYERS}"))  # fmt: skip
    if errors:
        raise ConfigError(errors, source)
    return ArchSpec(name=name, input=inp, width=width, frontend=frontend, layers=layers, reuse=reuse,
                    post=post, heads=heads, compression=compression)  # fmt: skip


def _dump_block(block: Block) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": block.node.kind}
    if block.repeat != 1:
        out["repeat"] = block.repeat
    out.update(to_data(block.node))
    return out


def dump_spec(spec: ArchSpec) -> dict[str, Any]:
    """Plain data for an :class:`ArchSpec`, such that ``parse_spec(dump_spec(s)) == s``."""
    out: dict[str, Any] = {"format": spec.format, "name": spec.name}
    inp = to_data(spec.input)
    out["input"] = inp if inp else {"kind": "waveform"}
    out["width"] = spec.width
    out["frontend"] = [_dump_block(b) for b in spec.frontend]
    out["layers"] = [_dump_block(b) for b in spec.layers]
    if spec.reuse != "none":
        out["reuse"] = spec.reuse if isinstance(spec.reuse, str) else list(spec.reuse)
    for key in ("post", "heads"):
        if getattr(spec, key):
            out[key] = [_dump_block(b) for b in getattr(spec, key)]
    if spec.compression:
        out["compression"] = [to_data(r) for r in spec.compression]
    return out
