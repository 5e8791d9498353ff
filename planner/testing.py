"""Small random valid architectures, for tests generated from the registries (torch-free).

:func:`random_arch` returns the plain YAML data of an architecture that validates: every registered node
kind and attention kind can be asked for, and the rest of the architecture is drawn around it (frontends
for waveform or filterbank input, optional mask / positional / layer-norm nodes, Transformer, Conformer and
Squeezeformer layers with time reduction / recovery pairs, attention-map reuse by pattern or explicitly,
projection and CTC heads, compression rules). Widths stay between 16 and 64 so that a model runs in
milliseconds on a CPU.

Example:
    >>> import random, planner
    >>> from planner.testing import random_arch
    >>> graph = planner.from_dict(random_arch(random.Random(0), "conformer"))
    >>> any(n.kind == "conformer" for n in graph.nodes())
    True
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

from planner.ir.attention import ATTENTION_KINDS
from planner.ir.kinds import NODE_KINDS

__all__ = ["random_arch", "GENERATED_NODE_KINDS", "GENERATED_ATTENTION_KINDS", "WAVEFORM_SAMPLES", "FEATURE_FRAMES"]

#: Input sizes the generated architectures are made for: every node keeps at least a few frames.
WAVEFORM_SAMPLES = 1600
FEATURE_FRAMES = 64

_FRONTENDS = ("conv_extractor", "conv2d_subsampling", "dwsep_subsampling")
_OPTIONAL_FRONTEND = ("mask_embedding", "conv_pos_embedding", "layer_norm")
_ATTENTION_LAYERS = ("transformer", "conformer", "squeezeformer")
_TIME = ("time_reduction", "time_recovery")
_HEADS = ("projection_heads", "ctc")

#: The node and attention kinds this generator knows how to draw; a newly registered kind must be added.
GENERATED_NODE_KINDS = frozenset(_FRONTENDS + _OPTIONAL_FRONTEND + _ATTENTION_LAYERS + _TIME + _HEADS)
GENERATED_ATTENTION_KINDS = frozenset(
    {"full", "local", "sparse_strided", "sparse_strided_only", "sparse_fixed", "reuse"}
)


def random_arch(rng: random.Random, kind: str | None = None, *, kinds: Collection[str] | None = None) -> dict[str, Any]:
    """Draws a small, valid architecture as plain YAML data.

    Args:
        rng: the source of randomness (the result is a function of its state).
        kind: a node kind (``conformer``...) or an attention kind (``local``, ``reuse``...) that the
            architecture must contain; None for any.
        kinds: the node kinds the generator may use besides ``kind`` (default: every registered kind), e.g.
            only those with a builder.

    Returns:
        A mapping for :func:`planner.from_dict`.

    Raises:
        ValueError: ``kind`` is not registered, or is registered but unknown to this generator (add it here).
    """
    unknown = (set(NODE_KINDS) - GENERATED_NODE_KINDS) | (set(ATTENTION_KINDS) - GENERATED_ATTENTION_KINDS)
    if kind is not None and (kind in unknown or (kind not in NODE_KINDS and kind not in ATTENTION_KINDS)):
        raise ValueError(f"random_arch cannot draw {kind!r}: "
                         + ("teach planner/testing.py the new kind" if kind in unknown else "not a registered kind"))  # fmt: skip
    allowed = set(NODE_KINDS if kinds is None else kinds) | ({kind} if kind in NODE_KINDS else set())
    if kind == "time_recovery":
        allowed.add("time_reduction")
    return _Drawer(rng, kind, allowed).draw()


class _Drawer:
    """One draw of :func:`random_arch` (a helper keeping the running state of the layer stack)."""

    def __init__(self, rng: random.Random, kind: str | None, allowed: set[str]) -> None:
        self.rng = rng
        self.kind = kind
        self.allowed = allowed
        self.width = rng.choice([16, 24, 32, 48, 64])
        self.heads = rng.choice([h for h in (1, 2, 4, 8) if self.width % h == 0 and self.width // h >= 4])

    def wants(self, kind: str, p: float) -> bool:
        """Whether to include ``kind``: always if it was asked for, never if not allowed, else with ``p``."""
        if kind == self.kind:
            return True
        return kind in self.allowed and self.rng.random() < p

    # -- frontend --------------------------------------------------------------------------------------
    def frontend(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        options = [k for k in _FRONTENDS if k in self.allowed]
        front = self.kind if self.kind in _FRONTENDS else rng.choice(options or ["conv_extractor"])
        if front == "conv_extractor":
            inp: dict[str, Any] = {"kind": "waveform", "sample_rate": 16000}
            first = [rng.choice([8, 16, 32]), rng.choice([8, 10]), rng.choice([4, 5])]
            convs: list[Any] = [first]
            for _ in range(rng.randint(1, 2)):
                convs.append([rng.choice([16, 32]), rng.choice([2, 3]), 2])
            last = convs[-1][0]
            if rng.random() < 0.5:
                last = self.width if rng.random() < 0.5 else 16
                convs.append(f"2 x {[last, 2, 2]}")
            node = {
                "kind": "conv_extractor",
                "conv_layers": convs,
                "bias": rng.random() < 0.5,
                "norm": rng.choice(["group_first", "layer_all", "none"]),
                "output_norm": rng.random() < 0.5,
                "projection": last != self.width or rng.random() < 0.5,
            }
        else:
            inp = {"kind": "features", "n_mels": rng.choice([16, 20, 40])}
            if front == "conv2d_subsampling":
                node = {"kind": front, "channels": [rng.choice([4, 8]) for _ in range(rng.randint(1, 2))]}
            else:
                node = {"kind": front, "channels": rng.choice([4, 8])}
        nodes = [node]
        if self.wants("mask_embedding", 0.4):
            nodes.append({"kind": "mask_embedding"})
        if self.wants("conv_pos_embedding", 0.4):
            groups = rng.choice([g for g in (1, 2, 4, 8, 16) if self.width % g == 0])
            nodes.append({"kind": "conv_pos_embedding", "kernel": rng.choice([3, 4, 8, 16]), "groups": groups,
                          "weight_norm": rng.random() < 0.5})  # fmt: skip
        if self.wants("layer_norm", 0.4):
            nodes.append({"kind": "layer_norm"})
        return inp, nodes

    # -- layers ----------------------------------------------------------------------------------------
    def attention(self, forced: bool) -> Any:
        rng = self.rng
        if self.kind in GENERATED_ATTENTION_KINDS and self.kind != "reuse" and (forced or rng.random() < 0.5):
            choice = self.kind
        else:
            choice = rng.choice(["full", "full", "local", "sparse_strided", "sparse_fixed"])
        if choice == "full":
            return rng.choice(["full", {"kind": "full"}, None])
        if choice == "local":
            return {"kind": "local", "window": rng.choice([1, 2, 3, 4, 5, 8])}
        if choice in ("sparse_strided", "sparse_strided_only"):  # the latter only when asked for (same draws)
            return {"kind": choice, "stride": rng.randint(2, 5)}
        block = rng.randint(2, 6)
        return {"kind": "sparse_fixed", "block": block, "summary": rng.randint(1, block)}

    def attention_layer(self, kind: str, heads: int, attention: Any) -> dict[str, Any]:
        rng = self.rng
        node: dict[str, Any] = {"kind": kind, "heads": heads, "ffn": self.width * rng.choice([1, 2, 4])}
        if attention is not None:
            node["attention"] = attention
        if rng.random() < 0.4:
            node["positional"] = "relative"
        if rng.random() < 0.2:
            node["dropout"] = 0.1
        if kind == "transformer":
            node["norm"] = rng.choice(["pre", "post"])
            node["activation"] = rng.choice(["gelu", "relu", "swish"])
        else:
            node["kernel"] = rng.choice([3, 4, 5, 7, 8])
            if rng.random() < 0.5:  # BiT-style ReLU FFNs (or GELU); Swish by default
                node["activation"] = rng.choice(["relu", "gelu"])
        if kind == "conformer" and rng.random() < 0.3:
            node["conv_bias"] = False
        if kind == "squeezeformer":
            node["ordering"] = rng.choice(["mfcf", "cfmf"])
        return node

    def layers(self) -> tuple[list[dict[str, Any]], Any]:
        """Expanded layers (reuse applied explicitly or returned as a pattern) and the ``reuse`` field."""
        rng = self.rng
        att_kinds = [k for k in _ATTENTION_LAYERS if k in self.allowed] or ["transformer"]
        if self.kind in _ATTENTION_LAYERS:
            att_kinds = [self.kind]
        reuse_mode = None
        if self.kind == "reuse" or rng.random() < 0.25:
            reuse_mode = rng.choice(["pattern", "list", "explicit"])
        # a time reduction between two layers forbids reuse across it: keep reuse draws free of it
        use_time = self.kind in _TIME or (reuse_mode is None and self.wants("time_reduction", 0.3))
        if use_time and reuse_mode == "pattern":
            reuse_mode = rng.choice(["list", "explicit"])
        count = rng.randint(2, 4) if reuse_mode is None else rng.choice([2, 4])
        layers: list[dict[str, Any]] = []
        resolution: list[int] = []
        res, open_reduction = 0, None
        for i in range(count):
            if use_time and open_reduction is None and i == 1:
                layers.append({"kind": "time_reduction", "stride": rng.choice([2, 3]), "kernel": rng.choice([1, 2, 3])})
                open_reduction, res = len(layers) - 1, res + 1
                resolution.append(res)
            heads = self.heads if reuse_mode or rng.random() < 0.7 else rng.choice([1, 2, 4])
            if self.width % heads:
                heads = self.heads
            forced = i == 0 and self.kind in GENERATED_ATTENTION_KINDS
            layers.append(self.attention_layer(rng.choice(att_kinds), heads, self.attention(forced)))
            resolution.append(res)
        wants_recovery = "time_recovery" in self.allowed and (self.kind == "time_recovery" or rng.random() < 0.7)
        if open_reduction is not None and wants_recovery:
            layers.append({"kind": "time_recovery", "source": open_reduction})
            # back at the input rate, but the IR gives a recovered stack a sequence id of its own
            res = -1
            resolution.append(res)
            layers.append(self.attention_layer(rng.choice(att_kinds), self.heads, self.attention(False)))
            resolution.append(res)
        return layers, self.reuse(layers, resolution, reuse_mode)

    def reuse(self, layers: list[dict[str, Any]], resolution: list[int], mode: str | None) -> Any:
        """Makes some attention layers reuse an earlier map; returns the ``reuse`` field value."""
        if mode is None:
            return None
        rng = self.rng
        att = [i for i, n in enumerate(layers) if "heads" in n]
        if mode == "pattern":  # AbyB: every A-th attention layer computes, the others reuse it
            for i in att:
                layers[i]["heads"] = self.heads
            size = rng.choice([a for a in range(2, len(att) + 1) if len(att) % a == 0])
            pattern = [k - k % size for k in range(len(att))]
        else:  # a layer reuses an earlier computing layer with the same heads and sequence length
            pattern = list(range(len(att)))
            for k in range(1, len(att)):
                same = [s for s in range(k) if pattern[s] == s and resolution[att[s]] == resolution[att[k]]
                        and layers[att[s]]["heads"] == layers[att[k]]["heads"]]  # fmt: skip
                if same and (rng.random() < 0.6 or (self.kind == "reuse" and k == 1)):
                    pattern[k] = rng.choice(same)
        for k, src in enumerate(pattern):
            if src != k:  # a pattern replaces full attention only; explicit reuse names the source layer
                explicit = {"kind": "reuse", "source": att[src]}
                layers[att[k]]["attention"] = explicit if mode == "explicit" else rng.choice(["full", None])
                if layers[att[k]]["attention"] is None:
                    del layers[att[k]]["attention"]
        if mode == "pattern":
            return f"{size}by{len(att) // size}"
        return pattern if mode == "list" else None

    # -- heads and compression -------------------------------------------------------------------------
    def heads_section(self, layer_count: int) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        if self.wants("projection_heads", 0.4):
            sel = rng.choice(["all", 0, f"0-{layer_count - 1}", sorted(rng.sample(range(layer_count), 2))])
            node: dict[str, Any] = {"kind": "projection_heads", "width": rng.choice([16, 32, 48])}
            if sel != "all":
                node["layers"] = sel
            out.append(node)
        if self.wants("ctc", 0.4):
            out.append({"kind": "ctc", "vocab": rng.randint(2, 40)})
        return out

    def compression(self, layers: list[dict[str, Any]], has_heads: bool) -> list[dict[str, Any]]:
        rng = self.rng
        att = [i for i, n in enumerate(layers) if "heads" in n]
        rules: list[dict[str, Any]] = []
        candidates = [
            lambda: {"weight": "int8"},
            lambda: {"layers": rng.choice(att), "modules": ["ffn"], "weight": "int4", "sparsity": "2:4"},
            lambda: {"layers": f"0-{len(layers) - 1}", "modules": ["ffn", "v"], "sparsity": [2, 4]},
            lambda: {
                "modules": ["attention"],
                "weight": {"bits": 2, "granularity": "subchannel", "groups": 2, "symmetric": False},
            },  # fmt: skip
            lambda: {
                "layers": sorted(set(rng.sample(att, min(2, len(att))))),
                "modules": ["ffn"],
                "weight": {"bits": 4, "granularity": "subchannel", "group_size": 8},
            },  # fmt: skip
            lambda: {"weight": "int2", "activation": {"bits": 4, "symmetric": False}},
            lambda: {"layers": "frontend", "weight": "binary", "activation": 8},
            lambda: {"modules": ["conv"], "weight": "fp16", "sparsity": "none"},
            lambda: {"layers": rng.choice(att), "modules": ["out", "fc2"], "activation": "binary"},
        ]
        if has_heads:
            candidates.append(lambda: {"layers": "heads", "weight": 8, "activation": "int8"})
        for _ in range(rng.randint(0, 3)):
            rules.append(rng.choice(candidates)())
        return rules

    def draw(self) -> dict[str, Any]:
        rng = self.rng
        inp, frontend = self.frontend()
        layers, reuse = self.layers()
        heads = self.heads_section(len(layers))
        arch: dict[str, Any] = {"format": 1, "name": f"random-{self.kind or 'any'}", "input": inp,
                                "width": self.width, "frontend": frontend, "layers": _with_repeats(layers, rng)}  # fmt: skip
        if reuse is not None:
            arch["reuse"] = reuse
        if "layer_norm" in self.allowed and rng.random() < 0.3:
            arch["post"] = [{"kind": "layer_norm"}]
        if heads:
            arch["heads"] = heads
        rules = self.compression(layers, bool(heads))
        if rules:
            arch["compression"] = rules
        return arch


def _with_repeats(layers: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Folds runs of identical consecutive layers into ``repeat`` entries, half of the time."""
    if rng.random() < 0.5:
        return layers
    out: list[dict[str, Any]] = []
    for node in layers:
        if out and {k: v for k, v in out[-1].items() if k != "repeat"} == node:
            out[-1]["repeat"] = out[-1].get("repeat", 1) + 1
        else:
            out.append(dict(node))
    return out
