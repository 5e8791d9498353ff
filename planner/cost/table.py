"""The per-layer table ``planner cost`` prints, in the manner of DeepSpeed's profile printout."""

from __future__ import annotations

from planner.cost._types import Cost

__all__ = ["format_cost"]


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def format_cost(cost: Cost, name: str = "") -> str:
    """Totals (with Jeon et al.'s A100 estimate, and the BOP convention when not the default), then one row
    per leaf: name, kind, params, storage, MACs, BOPs, bits, N:M, share of MACs."""
    secs = ", ".join(str(s) for s in cost.samples[:4]) + (" ..." if len(cost.samples) > 4 else "")
    lines = [
        f"{name}: {cost.params:,} params, {_si(cost.storage_bytes, 'B')} stored, {_si(cost.macs, 'MACs')}, "
        f"{_si(cost.flops, 'FLOPs')}, {_si(cost.bops, 'BOPs')}"
        + (f" ({cost.bops_convention})" if cost.bops_convention != "bayesian_bits" else "")
        + f", {cost.nvda_est_time * 1e3:.4g} ms est. A100 (Jeon et al.)"
        + (f", {cost.latency_s * 1e3:.3f} ms on {cost.hardware}" if cost.latency_s is not None else "")
        + f" (samples: {secs}; attention: {cost.attention})",
    ]
    header = ("name", "kind", "params", "storage", "MACs", "BOPs", "bits w/a", "N:M", "MACs %", "params %")
    rows = [header]
    for lc in cost.layers:
        rows.append((lc.name, lc.kind, f"{lc.params:,}", _si(lc.storage_bytes, "B"), _si(lc.macs), _si(lc.bops),
                     f"{lc.weight_bits}/{lc.act_bits}", lc.sparsity or "-",
                     f"{100 * lc.macs / cost.macs:.2f}" if cost.macs else "-",
                     f"{100 * lc.params / cost.params:.2f}" if cost.params else "-"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 4, 5, 8, 9}
    for r in rows:
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)
