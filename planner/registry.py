"""A small registry keyed by a stable string ``kind``.

The planner has one registry per extension axis (node kinds, attention kinds, ...). The IR schema,
the cost model and the materializer each keep a registry over the same keys; tests assert that the key
sets are identical, so a new kind is either complete everywhere or rejected at test time. Registering a
key twice, or a malformed key, fails at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry"]

V = TypeVar("V")

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[V]):
    """A mapping from ``kind`` to one value, filled by explicit ``register`` calls or given as one table.

    Args:
        axis: what the registry holds, used in error messages (``"node kind"``).
        table: ``kind -> value`` entries to add now, checked like :meth:`add` (an explicit table, for an
            axis whose values are defined in other modules: see :data:`planner.nn.BUILDERS`).
    """

    def __init__(self, axis: str, table: Mapping[str, V] | None = None) -> None:
        self.axis = axis
        self._items: dict[str, V] = {}
        for key, value in (table or {}).items():
            self.add(key, value)

    def register(self, key: str) -> Callable[[V], V]:
        """Decorator that registers its argument under ``key``."""

        def deco(value: V) -> V:
            self.add(key, value)
            return value

        return deco

    def add(self, key: str, value: V) -> None:
        if not _KEY.match(key):
            raise ValueError(f"malformed {self.axis} key {key!r}: use lower_snake_case")
        if key in self._items:
            raise ValueError(f"duplicate {self.axis} {key!r}")
        self._items[key] = value

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def get(self, key: str) -> V | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, V]]:
        return list(self._items.items())

    def allowed(self) -> str:
        """The registered keys, for error messages."""
        return ", ".join(sorted(self._items))
