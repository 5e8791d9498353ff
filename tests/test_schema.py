"""planner.config: finite floats, bounds that NaN fails, all errors at once, kinds with their own fields."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from planner.config import dump_kind, field, from_data, parse_kind
from planner.errors import ConfigError, FieldError


@dataclass(frozen=True)
class _Opt:
    lr: float = field(1e-3, gt=0)
    eps: float = field(1e-8, gt=0)
    clip: float | None = field(None, gt=0)
    steps: int = field(10, ge=1)


@dataclass(frozen=True)
class _Tpe:
    multivariate: bool = False


@dataclass(frozen=True)
class _Nsga2:
    population_size: int = field(50, ge=2)


KINDS = {"tpe": _Tpe, "nsga2": _Nsga2}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_float_fields_refuse_non_finite(bad: float) -> None:
    with pytest.raises(FieldError, match="lr: .*not a finite number"):
        from_data(_Opt, {"lr": bad})


@pytest.mark.parametrize(("data", "message"), [({"lr": 0}, "lr: 0.0 must be greater than 0"),
                                               ({"clip": -1.0}, "clip: -1.0 must be greater than 0"),
                                               ({"steps": 0}, "steps: 0 must be at least 1")])  # fmt: skip
def test_bounds(data: dict, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        from_data(_Opt, data)


def test_optional_none_is_not_bounded() -> None:
    assert from_data(_Opt, {"clip": None}).clip is None


def test_all_mistakes_reported_at_once() -> None:
    with pytest.raises(FieldError) as info:
        from_data(_Opt, {"lr": -1, "eps": math.nan, "typo": 1}, "optimizer")
    paths = sorted(e.path for e in info.value.errors)
    assert paths == ["optimizer.eps", "optimizer.lr", "optimizer.typo"]
    rendered = str(ConfigError([info.value], "r.yaml"))
    assert rendered.count("r.yaml: optimizer.") == 3


def test_parse_kind_own_fields_only() -> None:
    assert parse_kind(KINDS, {"kind": "nsga2", "population_size": 8}, "sampler", "sampler") == _Nsga2(8)
    assert parse_kind(KINDS, "tpe", "sampler", "sampler") == _Tpe()
    with pytest.raises(FieldError, match="sampler.population_size: not a field of sampler kind 'tpe'"):
        parse_kind(KINDS, {"kind": "tpe", "population_size": 50}, "sampler", "sampler")
    with pytest.raises(FieldError, match=r"sampler.kind: 'cmaes' is not a sampler kind \(allowed: nsga2, tpe\)"):
        parse_kind(KINDS, {"kind": "cmaes"}, "sampler", "sampler")
    assert dump_kind("nsga2", _Nsga2(8)) == {"kind": "nsga2", "population_size": 8}
