"""The resolved view of a graph that ``planner show`` prints (a table, or JSON)."""

from __future__ import annotations

from typing import Any

from planner.config import to_data
from planner.ir.compression import FLOAT32
from planner.ir.graph import EncoderGraph

__all__ = ["describe_graph", "format_graph"]


def describe_graph(graph: EncoderGraph, seconds: float = 1.0) -> dict[str, Any]:
    """Every node with its kind, resolved attributes, widths, frames for ``seconds`` of audio and leaves."""
    samples = int(round(seconds * graph.spec.input.sample_rate))
    lengths = graph.lengths(samples)
    nodes = []
    for n in graph.nodes():
        leaves = []
        for lf in n.leaves:
            comp = graph.compression.get(f"{n.name}.{lf.path}", FLOAT32)
            leaves.append({
                "path": f"{n.name}.{lf.path}",
                "op": lf.op,
                "params": lf.params,
                "weight_bits": comp.weight.bits if lf.compressible else None,
                "act_bits": comp.activation.bits if lf.quantizable else None,
                "granularity": comp.weight.granularity if lf.compressible and not comp.weight.is_float else None,
                "sparsity": str(comp.sparsity) if comp.sparsity else None,
            })  # fmt: skip
        attrs = to_data(n.config)
        att = getattr(n.config, "attention", None)
        if att is not None:
            attrs["attention"] = {"kind": att.kind, **to_data(att)}
        nodes.append({
            "name": n.name,
            "kind": n.kind,
            "attributes": attrs,
            "in_width": n.context.in_width,
            "out_width": n.out_width,
            "frames": lengths[n.name],
            "params": sum(lf.params for lf in n.leaves),
            "leaves": leaves,
        })  # fmt: skip
    edges = [{"from": a, "to": b, "type": d["type"]} for a, b, d in graph.nx.edges(data=True)]
    return {"name": graph.name, "params": graph.param_count, "width": graph.width, "input": to_data(graph.spec.input)
            or {"kind": "waveform"}, "seconds": seconds, "nodes": nodes, "edges": edges}  # fmt: skip


def _node_summary(node: dict[str, Any]) -> str:
    attrs = dict(node["attributes"])
    att = attrs.pop("attention", None)
    parts = [f"{k}={v}" for k, v in attrs.items() if k not in ("conv_layers",)]
    if "conv_layers" in attrs:
        parts.insert(0, f"{len(attrs['conv_layers'])} convs")
    if att is not None and att.get("kind") != "full":
        parts.append("attention=" + ",".join(f"{k}={v}" for k, v in att.items()))
    return " ".join(parts)


def _bits(node: dict[str, Any]) -> str:
    seen = []
    for lf in node["leaves"]:
        if lf["act_bits"] is None:
            continue
        if lf["weight_bits"] is None:  # an attention product: both inputs at the activation width
            if lf["act_bits"] >= 32:
                continue
            text = f"matmul a{lf['act_bits']}"
        else:
            text = f"w{lf['weight_bits']}a{lf['act_bits']}" + (f" {lf['sparsity']}" if lf["sparsity"] else "")
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) or "-"


def format_graph(desc: dict[str, Any]) -> str:
    """A fixed-width table of :func:`describe_graph`'s output."""
    rows = [("node", "kind", "in", "out", "frames", "params", "bits / N:M", "attributes")]
    for n in desc["nodes"]:
        rows.append((n["name"], n["kind"], str(n["in_width"]), str(n["out_width"]), str(n["frames"]),
                     f"{n['params']:,}", _bits(n), _node_summary(n)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"{desc['name']}: {desc['params']:,} parameters, width {desc['width']}, frames for {desc['seconds']:g} s"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    extra = [e for e in desc["edges"] if e["type"] in ("attention_map", "skip")]
    if extra:
        lines.append("edges: " + ", ".join(f"{e['from']} -{e['type']}-> {e['to']}" for e in extra))
    return "\n".join(lines)
