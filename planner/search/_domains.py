"""The flat, labelled domains a sampler sees: plain data, no torch and no Optuna.

A domain is a categorical choice, an integer range or a float range with a unique ``label`` (its field
path in the space file, or the ``name`` it was given), and the conditions under which it is active.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from planner.errors import FieldError

__all__ = ["Categorical", "IntRange", "FloatRange", "Domain", "Condition", "MAX_BOUND", "MAX_GRID"]

MAX_BOUND = 2**53
"""The largest magnitude of a range's bounds, and the most points a stepped range may hold: every integer up to
it is exact in a float (what Optuna stores a parameter as)."""

MAX_GRID = 1_000_000
"""The most points :meth:`IntRange.grid` / :meth:`FloatRange.grid` list (a grid sampler enumerates them)."""

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Condition:
    """The domain is active only when the domain ``label`` is active and took one of ``values``."""

    label: str
    values: tuple[Scalar, ...]

    def __str__(self) -> str:
        vals = self.values[0] if len(self.values) == 1 else list(self.values)
        return f"{self.label} == {vals!r}" if len(self.values) == 1 else f"{self.label} in {vals!r}"


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (scalars: what Optuna's categorical distribution stores).

    Attributes:
        label: unique label (field path or ``name``).
        choices: the keys a sampler picks from; for options that are whole mappings these are the
            option's ``kind`` (or its index), and ``options`` holds the mappings.
        path: field path in the space file, for messages.
        when: conditions that must all hold for the domain to be active.
    """

    label: str
    choices: tuple[Scalar, ...]
    path: str
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def sample(self, rng: random.Random) -> Scalar:
        return self.choices[rng.randrange(len(self.choices))]

    def grid(self) -> list[Scalar]:
        return list(self.choices)

    def size(self) -> int:
        """The number of values (without listing them)."""
        return len(self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` on the grid ``low + k * step`` (or log-uniform with ``log``)."""

    label: str
    low: int
    high: int
    path: str
    step: int = 1
    log: bool = False
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)  # fmt: skip

    def sample(self, rng: random.Random) -> int:
        if self.log:
            return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
        return self.low + self.step * rng.randrange((self.high - self.low) // self.step + 1)

    def size(self) -> int:
        """The number of grid points (without listing them)."""
        return (self.high - self.low) // self.step + 1

    def grid(self) -> list[int]:
        """Every grid point.

        Raises:
            FieldError: more than :data:`MAX_GRID` points.
        """
        _check_grid(self.path, self.size())
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]" + (f" in steps of {self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``, uniform or log-uniform."""

    label: str
    low: float
    high: float
    path: str
    log: bool = False
    step: float | None = None
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if self.step is not None:
            return self.low + self.step * rng.randrange(int(round((self.high - self.low) / self.step)) + 1)
        return rng.uniform(self.low, self.high)

    def size(self) -> int | None:
        """The number of grid points, or None for a continuous range."""
        return None if self.step is None else int(round((self.high - self.low) / self.step)) + 1

    def grid(self) -> list[float]:
        """Every grid point of a stepped range.

        Raises:
            ValueError: a continuous range (no step).
            FieldError: more than :data:`MAX_GRID` points.
        """
        n = self.size()
        if n is None:
            raise ValueError(f"{self.label}: a continuous range has no grid (give it a step)")
        _check_grid(self.path, n)
        return [self.low + i * self.step for i in range(n)]  # type: ignore[operator]

    def describe(self) -> str:
        return f"a number in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


def _check_grid(path: str, n: int) -> None:
    if n > MAX_GRID:
        raise FieldError(path, f"a grid of {n:,} points is more than the {MAX_GRID:,} a grid sampler may enumerate "
                               "(use a larger step, fewer values, or another sampler)")  # fmt: skip


Domain = Categorical | IntRange | FloatRange
