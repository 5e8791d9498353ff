"""Hardware catalog: peak throughput per precision and memory bandwidth, for the latency roofline.

Entries are YAML files (``planner/cost/catalog/NAME.yaml``; A100 to start). ``--hardware`` takes a
catalog name or a path to a YAML file of the same layout, so users add accelerators without code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from planner.config import read_yaml  # the one YAML reader (repeated keys, alias bombs, deep nesting)
from planner.errors import ConfigError, FieldError

__all__ = ["Hardware", "PRECISIONS", "load_hardware", "parse_hardware", "catalog_names", "precision_of"]

CATALOG = Path(__file__).with_name("catalog")
PRECISIONS = ("fp32", "tf32", "fp16", "int8", "int4", "binary")
_FIELDS = ("format", "name", "peak_ops_per_s", "memory_bandwidth_bytes_per_s", "fp32_matmul",
           "sparse_2of4_speedup", "kernel_overhead_s")  # fmt: skip


@dataclass(frozen=True)
class Hardware:
    """One accelerator.

    Attributes:
        name: catalog name.
        peak: ``(precision, ops per second)`` pairs for every entry of :data:`PRECISIONS`.
        bandwidth: memory bandwidth in bytes per second.
        fp32_matmul: the rate fp32 matmuls and convolutions run at (``fp32`` or ``tf32``).
        sparse_2of4_speedup: matmul speed-up of 2:4-sparse weights (1.0: none).
        kernel_overhead_s: fixed seconds per leaf.
    """

    name: str
    peak: tuple[tuple[str, float], ...]
    bandwidth: float
    fp32_matmul: Literal["fp32", "tf32"] = "tf32"
    sparse_2of4_speedup: float = 1.0
    kernel_overhead_s: float = 0.0

    def rate(self, precision: str) -> float:
        return dict(self.peak)[precision]


def precision_of(weight_bits: int, act_bits: int) -> str:
    """The tensor-core precision a leaf runs at: set by the wider of its weight and activation.

    1/1 runs binary; up to 4 bits int4 (there is no int2 rate: 2-bit runs as int4); 8 int8; 16 fp16;
    32 fp32 (or tf32, per the catalog's ``fp32_matmul``).
    """
    bits = max(weight_bits, act_bits)
    if bits == 1:
        return "binary"
    if bits <= 4:
        return "int4"
    if bits <= 8:
        return "int8"
    if bits <= 16:
        return "fp16"
    return "fp32"


def catalog_names() -> list[str]:
    return sorted(p.stem for p in CATALOG.glob("*.yaml"))


def _number(data: dict[str, Any], key: str, path: str, default: float | None = None, minimum: float = 0.0,
            strict: bool = True) -> float:  # fmt: skip
    value = data.get(key, default)
    if value is None:
        raise FieldError(path, "required field is missing")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:  # not a number: reported just below with the field path
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(path, f"{value!r} is not a number")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not math.isfinite(value):
        raise FieldError(path, f"{value!r} is not a finite number (NaN and infinity are not allowed)")
    if not (value > minimum if strict else value >= minimum):
        raise FieldError(path, f"{value} must be {'>' if strict else '>='} {minimum:g}")
    return value


def parse_hardware(data: Any, source: str | None = None) -> Hardware:
    """Validates a catalog document; every problem is reported with its field path.

    Raises:
        ConfigError: listing each bad field as ``FILE: field.path: problem``.
    """
    if not isinstance(data, dict):
        raise ConfigError([FieldError("", f"expected a mapping, got {type(data).__name__}")], source)
    errors: list[FieldError] = []
    for key in data:
        if key not in _FIELDS:
            errors.append(FieldError(str(key), f"unknown field (allowed: {', '.join(_FIELDS)})"))
    if data.get("format", 1) != 1:
        errors.append(FieldError("format", f"{data.get('format')!r} is not a known format (allowed: 1)"))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        errors.append(FieldError("name", f"{name!r} is not a non-empty string"))
    peak = data.get("peak_ops_per_s")
    rates: list[tuple[str, float]] = []
    if not isinstance(peak, dict):
        errors.append(FieldError("peak_ops_per_s", f"expected a mapping of {', '.join(PRECISIONS)} to ops per second"))
    else:
        for key in peak:
            if key not in PRECISIONS:
                errors.append(
                    FieldError(f"peak_ops_per_s.{key}", f"unknown precision (allowed: {', '.join(PRECISIONS)})")
                )
        for p in PRECISIONS:
            try:
                rates.append((p, _number(peak, p, f"peak_ops_per_s.{p}")))
            except FieldError as err:
                errors.append(err)
    values: dict[str, float] = {}
    for key, default, strict, minimum in (("memory_bandwidth_bytes_per_s", None, True, 0.0),
                                          ("sparse_2of4_speedup", 1.0, False, 1.0),
                                          ("kernel_overhead_s", 0.0, False, 0.0)):  # fmt: skip
        try:
            values[key] = _number(data, key, key, default, minimum, strict)
        except FieldError as err:
            errors.append(err)
    fp32_matmul = data.get("fp32_matmul", "tf32")
    if fp32_matmul not in ("fp32", "tf32"):
        errors.append(FieldError("fp32_matmul", f"{fp32_matmul!r} is not allowed (allowed: fp32, tf32)"))
    if errors:
        raise ConfigError(errors, source)
    return Hardware(name, tuple(rates), values["memory_bandwidth_bytes_per_s"], fp32_matmul,
                    values["sparse_2of4_speedup"], values["kernel_overhead_s"])  # fmt: skip


def load_hardware(name_or_path: str | os.PathLike[str] | Hardware) -> Hardware:
    """A catalog entry by name (``a100``) or a YAML file by path.

    Raises:
        ConfigError: unknown name, unreadable file, or invalid fields (with file and field path).

    Example:
        >>> load_hardware("a100").bandwidth
        2039000000000.0
    """
    if isinstance(name_or_path, Hardware):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text or path.exists()):
        path = CATALOG / f"{text}.yaml"
        if not path.exists():
            raise ConfigError([FieldError("hardware", f"{text!r} is not in the catalog (allowed: "
                                          f"{', '.join(catalog_names())}, or a path to a YAML file)")])  # fmt: skip
    return parse_hardware(read_yaml(path), str(path))
