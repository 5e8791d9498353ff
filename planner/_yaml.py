"""The one YAML reader of every file the planner reads (architectures, spaces, studies, recipes, tasks,
hardware catalogs).

It is PyYAML's safe loader (no tags that build Python objects) with four refusals added while the document
is composed, before any value is constructed or walked:

* a key that repeats in one mapping (``FILE: line 7: key 'width' repeats line 3``; YAML would let the last
  one win silently); merge keys (``<<: *base``) may still be overridden;
* a document nested deeper than :data:`MAX_DEPTH` levels (PyYAML's composer recurses per level, and so do
  the planner's walks: a bound here keeps every later walk far from the interpreter's recursion limit);
* a document that expands to more than :data:`MAX_NODES` nodes, aliases counted at each use (an "alias
  bomb": a 1 kB file of nested ``*alias`` lists expands to billions of values); sizes are memoized per
  node, so the check is linear in the file and a file with a few anchors is fine;
* an alias that refers to a node containing it (a cyclic value no walk could finish).

Every refusal is a :class:`~planner.errors.ConfigError` naming the file and the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from planner.errors import ConfigError, FieldError, YamlRefusal

__all__ = ["MAX_DEPTH", "MAX_NODES", "parse_yaml"]

MAX_DEPTH = 64
"""Nesting levels a document may have (the planner's own files use at most 8)."""

MAX_NODES = 20_000
"""Values (scalars, lists, mappings) a document may expand to, an alias counted at each use (the planner's
own files have at most a few hundred)."""

_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """The safe loader with bounded depth and expansion, and duplicate keys reported."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[Node, int] = {}  # expanded size of every composed node (nodes hash by identity)
        self.duplicates: list[FieldError] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and node not in self._sizes:  # its anchor is still being composed
                raise YamlRefusal(event.start_mark, f"alias *{event.anchor} refers to a value that contains it "
                                                 "(a cyclic document cannot be read)")  # fmt: skip
            return super().compose_node(parent, index)  # an undefined alias is PyYAML's error
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlRefusal(
                self.peek_event().start_mark,
                f"the document nests deeper than {MAX_DEPTH} levels (the limit of planner files)",
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, MappingNode):
            size += sum(self._sizes[k] + self._sizes[v] for k, v in node.value)
            self._check_keys(node)
        elif isinstance(node, SequenceNode):
            size += sum(self._sizes[v] for v in node.value)
        self._sizes[node] = size
        if size > MAX_NODES:
            raise YamlRefusal(node.start_mark, f"the document expands to more than {MAX_NODES:,} values (aliases "
                                            "counted at each use; the limit of planner files)")  # fmt: skip
        return node

    def _check_keys(self, node: MappingNode) -> None:
        seen: dict[Any, int] = {}  # key -> the line it first appears on
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue  # a complex key is PyYAML's to refuse; a merged key may be overridden
            here = key_node.start_mark.line + 1
            try:
                key = self.construct_object(key_node)
                repeated = key in seen
            except (yaml.YAMLError, TypeError):
                continue  # a malformed or unhashable key: the constructor reports it
            if repeated:
                self.duplicates.append(FieldError(f"line {here}", f"key {key!r} repeats line {seen[key]}"))
            else:
                seen[key] = here

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {len(node.value):,} digits is too "
                                                    "long to read", node.start_mark) from None  # fmt: skip


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def parse_yaml(text: str, source: str | None) -> Any:
    """Parses one YAML document with the refusals of this module.

    Args:
        text: the document.
        source: the file name, for messages.

    Raises:
        ConfigError: invalid YAML, a tag, a repeated key, a document nested too deep or expanding too far;
            ``FILE: line N[, column C]: problem``.

    Example:
        >>> parse_yaml("width: 32", "a.yaml")
        {'width': 32}
    """
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except YamlRefusal as err:
        raise ConfigError([err], source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([FieldError("", f"{where}invalid YAML ({problem})")], source) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates, source)
    return data
