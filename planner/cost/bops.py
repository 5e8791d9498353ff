"""BOP and FLOP accounting conventions, and Jeon et al.'s A100 time estimate (``nvda_est_time``).

Two named conventions, chosen with ``estimate(..., bops=...)``, ``planner cost --bops`` or a study's
``bops:`` field:

* ``bayesian_bits`` (the default; van Baalen et al. 2020): a MAC costs ``weight bits x activation bits``
  BOPs (a float MAC 32 x 32 = 1024), times the N:M density; FLOPs are ``2 x MACs`` of every MAC plus the
  non-MAC FLOPs (norms, softmax).
* ``jeon2023`` (Jeon et al. 2023, "Attention or Convolution", Table 1): a MAC costs the bits of the wider
  operand, so a float MAC costs 32 BOPs and a binarized (W1A1) MAC 1, times the N:M density; FLOPs count
  only the MACs that run in floating point (``2 x MACs`` where the wider operand has more than 8 bits, the
  precisions :func:`planner.cost.hardware.precision_of` calls fp16/fp32), plus the non-MAC FLOPs: integer
  and binarized MACs are bit operations, not floating-point ones. Table 1 reports ``BOP / 2^30``
  (``BOP_NonQ = 32 x MACs / 2^30`` on four of its five float rows, computed from its own FLOP column).

``nvda_est_time`` is Table 1's ``NVDA_Est_Time`` column, reproduced on all ten rows by
``t = (BOP_NonQ + BOP_BQ / 16) x 1e9 / 3.19488e14`` seconds with the BOP columns in units of ``2^30``:
float BOPs run at A100's dense fp16 tensor-core peak "312 T" taken as ``312 x 2^40`` BOP/s, binarized BOPs
16 times faster (A100's 4992 binary TOPS over 312). It is always computed from the ``jeon2023`` BOPs,
whichever convention ``bops`` reports. Integer MACs, which the table does not have, get A100's datasheet
ratios over fp16 as well: int8 2x (624 TOPS), int4 (and int2, which runs as int4) 4x (1248 TOPS).

Example:
    >>> op_bops(10, 32, 32, "jeon2023"), op_bops(10, 32, 32, "bayesian_bits"), op_bops(10, 1, 1, "jeon2023")
    (320, 10240, 10)
    >>> round(nvda_seconds(1228.64 * 2**30, 32, 32) * 1e4, 2)  # Table 1, Vanilla Trans: 38.46e-4 s
    38.46
"""

from __future__ import annotations

from typing import Literal, get_args

from planner.cost.hardware import precision_of
from planner.errors import FieldError

__all__ = [
    "BOPS_CONVENTIONS",
    "BopsConvention",
    "JEON2023_FLOAT_BOPS_PER_S",
    "JEON2023_SPEEDUP",
    "check_bops_convention",
    "is_float_mac",
    "nvda_seconds",
    "op_bops",
    "op_flops",
]

BopsConvention = Literal["bayesian_bits", "jeon2023"]
BOPS_CONVENTIONS: tuple[str, ...] = get_args(BopsConvention)

# Table 1's constant 3.19488e14 = 312 x 1024 x 1e9 divides BOPs in units of 2^30 scaled by 1e9: per BOP
# that is 312 x 2^40 BOP/s (A100's 312 T fp16 peak, with T read as 2^40 like the table's G as 2^30).
JEON2023_FLOAT_BOPS_PER_S = 312 * 2**40
# A100 dense tensor-core peaks over its fp16 peak (binary 4992, int4 1248, int8 624, fp16 312 TOPS); float
# precisions run at 1, as Table 1 prices its FP32 BOPs.
JEON2023_SPEEDUP = {"binary": 16, "int4": 4, "int8": 2}


def check_bops_convention(value: object, path: str = "bops") -> BopsConvention:
    """Returns ``value`` if it names a convention.

    Raises:
        FieldError: at ``path``, listing the allowed conventions.
    """
    if not isinstance(value, str) or value not in BOPS_CONVENTIONS:
        raise FieldError(path, f"{value!r} is not a BOP convention (allowed: {', '.join(BOPS_CONVENTIONS)})")
    return value  # type: ignore[return-value]


def op_bops(macs: int, weight_bits: int, act_bits: int, convention: BopsConvention = "bayesian_bits",
            n: int = 1, m: int = 1) -> int:  # fmt: skip
    """BOPs of ``macs`` MACs with the given operand widths and N:M density ``n / m`` (floored)."""
    per_mac = weight_bits * act_bits if convention == "bayesian_bits" else max(weight_bits, act_bits)
    if n == m:
        return macs * per_mac
    return macs * per_mac * n // m


def is_float_mac(weight_bits: int, act_bits: int) -> bool:
    """Whether a MAC of these operand widths runs in floating point (fp16/fp32/tf32)."""
    return precision_of(weight_bits, act_bits) in ("fp16", "fp32")


def op_flops(macs: int, extra_flops: int, weight_bits: int, act_bits: int,
             convention: BopsConvention = "bayesian_bits") -> int:  # fmt: skip
    """FLOPs of an op: ``2 x MACs`` (under ``jeon2023`` only for float MACs) plus its non-MAC FLOPs."""
    if convention == "jeon2023" and not is_float_mac(weight_bits, act_bits):
        return extra_flops
    return 2 * macs + extra_flops


def nvda_seconds(jeon_bops: int | float, weight_bits: int, act_bits: int) -> float:
    """Table 1's A100 estimate for ``jeon_bops`` BOPs (``jeon2023`` convention) of one precision."""
    return jeon_bops / (JEON2023_FLOAT_BOPS_PER_S * JEON2023_SPEEDUP.get(precision_of(weight_bits, act_bits), 1))
