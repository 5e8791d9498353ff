"""Search spaces: an architecture file whose values may be choices, ranges or references.

Markers (a mapping with one of these keys, anywhere a value may stand)::

    {choice: [a, b, c]}                     # categorical; options may be whole mappings (kind: ...)
    {range: [lo, hi], step: s}              # integer grid (step defaults to 1; log: true for log-uniform)
    {range: [lo, hi], log: true}            # float (log-uniform); lo, hi floats give a float range
    {choice: [...], name: ffn_width}        # a named domain, reusable elsewhere ...
    {ref: ffn_width}                        # ... as the same value (tie: is an alias of ref:)
    {ref: pattern, map: {none: 1536, 2by6: {ref: ffn_width}}}   # a value derived from another domain
    {ref: width, scale: 2.5}                # another domain's value times a number (rounded if an int)
    {ref: width, map: {144: {choice: [none, 2by8]}, 288: {choice: [none, 2by4]}}}   # a choice per value
    {choice: [15, 31], when: {layers[0].kind: [conformer, squeezeformer]}}  # only when a condition holds
    {choice: [{kind: transformer, ...}, {kind: conformer, ...}], repeat: 4}   # other keys: shared by all options

A marker inside an option of a choice, or inside the entry of a ``map`` for one value, exists only when
that option or value is picked (an implicit condition).
A domain whose condition does not hold is left out of the frozen file, so the field takes its default.

:func:`load_space` validates the whole file (markers, names, conditions, and every option of every choice
through the architecture parser) and reports every problem with the file and the field path.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

from planner.config import join, parse_yaml, read_yaml
from planner.errors import ConfigError, FieldError
from planner.ir.spec import parse_spec
from planner.search._domains import MAX_BOUND, Categorical, Condition, Domain, FloatRange, IntRange

__all__ = ["SearchSpace", "load_space", "loads_space", "space_from_dict"]

_SCALARS = (str, int, float, bool, type(None))
_PICK_KEYS = {"choice": ("choice", "name", "when"), "range": ("range", "step", "log", "name", "when")}
_REF_KEYS = ("ref", "tie", "map", "scale")
_DROP = object()  # a conditional value that is not active: the field is left out


def _finite(value: Any) -> bool:
    """Whether a YAML scalar is not a float NaN or infinity (which no domain may hold)."""
    return not isinstance(value, float) or math.isfinite(value)


@dataclass
class _Pick:
    domain: Domain
    options: tuple[Any, ...] | None = None  # templates of mapping options, aligned with domain.choices
    shared: dict[str, Any] | None = None  # keys next to a choice of mappings, merged into the picked one


@dataclass
class _Ref:
    name: str
    path: str
    mapping: dict[Any, Any] | None = None
    scale: float | None = None


def _is_marker(data: Any) -> bool:
    return isinstance(data, dict) and any(k in data for k in ("choice", "range", "ref", "tie"))


@dataclass
class _Parser:
    errors: list[FieldError] = field(default_factory=list)
    domains: list[Domain] = field(default_factory=list)
    named: dict[str, _Pick] = field(default_factory=dict)
    refs: list[_Ref] = field(default_factory=list)
    raw_when: list[tuple[int, str, Any]] = field(default_factory=list)  # (domain index, path, when data)

    def parse(self, data: Any, path: str, implicit: tuple[Condition, ...]) -> Any:
        if _is_marker(data):
            return self.marker(data, path, implicit)
        if isinstance(data, dict):
            return {k: self.parse(v, join(path, str(k)), implicit) for k, v in data.items()}
        if isinstance(data, list):
            return [self.parse(v, join(path, i), implicit) for i, v in enumerate(data)]
        return data

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def marker(self, data: dict[str, Any], path: str, implicit: tuple[Condition, ...]) -> Any:
        if "ref" in data or "tie" in data:
            return self.ref(data, path, implicit)
        kind = "choice" if "choice" in data else "range"
        other = "range" if kind == "choice" else "choice"
        allowed = _PICK_KEYS[kind]
        shared_ok = kind == "choice" and isinstance(data["choice"], list) and bool(data["choice"]) and all(
            isinstance(o, dict) and not _is_marker(o) for o in data["choice"])  # fmt: skip
        for key in data:
            if key not in allowed and not shared_ok:
                hint = f"; {key} belongs to {other}" if key in _PICK_KEYS[other] else ""
                self.fail(join(path, str(key)), f"unknown key in a {kind} (allowed: {', '.join(allowed)}{hint})")
        name = data.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            self.fail(join(path, "name"), f"{name!r} is not a name (a non-empty string)")
            name = None
        label = name or path
        pick = self.choice(data, path, label, implicit) if kind == "choice" else self.range(data, path, label, implicit)
        if pick is None:
            return None
        if shared_ok:
            pick.shared = {k: self.parse(v, join(path, str(k)), implicit) for k, v in data.items() if k not in allowed}
        if name is not None:
            if name in self.named:
                self.fail(join(path, "name"), f"the name {name!r} is already used by {self.named[name].domain.path}")
            self.named[name] = pick
        if "when" in data:
            self.raw_when.append((len(self.domains), join(path, "when"), data["when"]))
        self.domains.append(pick.domain)
        return pick

    def choice(self, data: dict[str, Any], path: str, label: str, implicit: tuple[Condition, ...]) -> _Pick | None:
        options = data["choice"]
        p = join(path, "choice")
        if not isinstance(options, list) or not options:
            self.fail(p, f"expected a non-empty list of options, got {options!r}")
            return None
        if all(isinstance(o, _SCALARS) and not _is_marker(o) for o in options):
            bad = [o for o in options if not _finite(o)]
            if bad:
                self.fail(p, f"{bad[0]!r} is not an option (NaN and infinity are not allowed)")
                return None
            keys = tuple(options)
            if len({(type(k), k) for k in keys}) != len(keys):
                self.fail(p, f"options repeat: {options!r}")
                return None
            return _Pick(Categorical(label, keys, path, implicit))
        kinds = [o.get("kind") if isinstance(o, dict) else None for o in options]
        use_kind = all(isinstance(k, str) for k in kinds) and len(set(kinds)) == len(kinds)
        keys = tuple(kinds) if use_kind else tuple(range(len(options)))
        templates = []
        for i, (key, option) in enumerate(zip(keys, options)):
            inner = (*implicit, Condition(label, (key,)))
            templates.append(self.parse(option, f"{p}[{i}]", inner))
        return _Pick(Categorical(label, keys, path, implicit), tuple(templates))

    def range(self, data: dict[str, Any], path: str, label: str, implicit: tuple[Condition, ...]) -> _Pick | None:
        bounds = data["range"]
        p = join(path, "range")
        ok = (isinstance(bounds, list) and len(bounds) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds))  # fmt: skip
        if not ok:
            self.fail(p, f"expected [low, high] (two numbers), got {bounds!r}")
            return None
        lo, hi = bounds
        if not all(_finite(b) and abs(b) <= MAX_BOUND for b in bounds):  # NaN fails the comparison
            self.fail(p, f"{bounds!r}: a bound must be a finite number of magnitude at most 2**53 = {MAX_BOUND:,} "
                         "(what a sampler stores exactly)")  # fmt: skip
            return None
        if lo > hi:
            self.fail(p, f"low {lo} is greater than high {hi} (write it as [{hi}, {lo}])")
            return None
        log = data.get("log", False)
        if not isinstance(log, bool):
            self.fail(join(path, "log"), f"expected true or false, got {log!r}")
            return None
        step = data.get("step")
        if log and lo <= 0:
            self.fail(p, f"a log range needs a positive low, got {lo}")
            return None
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(step, float):
            step = 1 if step is None else step
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                self.fail(join(path, "step"), f"{step!r} is not a positive integer step")
                return None
            if log and step != 1:
                self.fail(join(path, "step"), "a log range cannot have a step (drop step or log)")
                return None
            if (hi - lo) % step:
                self.fail(p, f"high {hi} is not low {lo} plus a multiple of step {step} "
                             f"(use high {lo + (hi - lo) // step * step})")  # fmt: skip
                return None
            return _Pick(IntRange(label, lo, hi, path, step, log, implicit))
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0
                                 or not _finite(step)):  # fmt: skip
            self.fail(join(path, "step"), f"{step!r} is not a positive step (a finite number above 0)")
            return None
        if step is not None and hi > lo and not (hi - lo) / step <= MAX_BOUND:
            self.fail(join(path, "step"), f"{step!r} cuts [{lo}, {hi}] into more than 2**53 points (use a larger "
                                          "step, or no step)")  # fmt: skip
            return None
        if step is not None and log:
            self.fail(join(path, "step"), "a log range cannot have a step (drop step or log)")
            return None
        return _Pick(
            FloatRange(label, float(lo), float(hi), path, log, None if step is None else float(step), implicit)
        )

    def ref(self, data: dict[str, Any], path: str, implicit: tuple[Condition, ...] = ()) -> _Ref | None:
        for key in data:
            if key not in _REF_KEYS:
                self.fail(join(path, str(key)), "unknown key in a ref (allowed: ref or tie, map, scale)")
        if "ref" in data and "tie" in data:
            self.fail(path, "give ref or tie, not both (they mean the same)")
        name = data.get("ref", data.get("tie"))
        if not isinstance(name, str):
            self.fail(join(path, "ref"), f"expected the name of a domain, got {name!r}")
            return None
        mapping = data.get("map")
        if mapping is not None:
            if not isinstance(mapping, dict) or not mapping:
                self.fail(join(path, "map"), f"expected a mapping from the domain's values to values, got {mapping!r}")
                return None
            # a choice or range inside the entry for key k exists only when the referenced domain is k
            mapping = {k: self.parse(v, join(join(path, "map"), str(k)), (*implicit, Condition(name, (k,))))
                       for k, v in mapping.items()}  # fmt: skip
        scale = data.get("scale")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            self.fail(join(path, "scale"), f"expected a number, got {scale!r}")
            return None
        if scale is not None and not (0 < scale <= MAX_BOUND):  # NaN fails it
            self.fail(join(path, "scale"), f"{scale!r} is not a scale (allowed: a finite number above 0 and at "
                                           "most 2**53)")  # fmt: skip
            return None
        if scale is not None and mapping is not None:
            self.fail(path, "give map or scale, not both")
        ref = _Ref(name, path, mapping, scale)
        self.refs.append(ref)
        return ref


class SearchSpace:
    """A parsed search space (see the module docstring for the file format).

    Attributes:
        source: the file it was read from, for messages.
        template: the architecture mapping with markers replaced by domain placeholders.
        study: the raw ``study:`` section, if any (parse it with :func:`planner.search.study_from_dict`).
    """

    def __init__(self, template: Any, domains: list[Domain], named: dict[str, _Pick], study: Any,
                 source: str | None) -> None:  # fmt: skip
        self.template = template
        self._domains = domains
        self._by_label = {d.label: d for d in domains}
        self._named = named
        self.study = study
        self.source = source

    # -- the sampler's view --------------------------------------------------------------------------
    def domains(self) -> list[Domain]:
        """The flat labelled domains, each after every domain its conditions read."""
        return list(self._domains)

    def domain(self, label: str) -> Domain:
        return self._by_label[label]

    def is_active(self, domain: Domain, values: dict[str, Any]) -> bool:
        """Whether ``domain`` takes part given the values chosen so far (its conditions all hold)."""
        for cond in domain.when:
            parent = self._by_label[cond.label]
            if not self.is_active(parent, values) or cond.label not in values:
                return False
            if not any(values[cond.label] == v and type(values[cond.label]) is type(v) for v in cond.values):
                return False
        return True

    def sample(self, rng: random.Random | int) -> dict[str, Any]:
        """Uniform random values of the active domains (no Optuna): ``{label: value}``."""
        if isinstance(rng, int):
            rng = random.Random(rng)
        values: dict[str, Any] = {}
        for d in self._domains:
            if self.is_active(d, values):
                values[d.label] = d.sample(rng)
        return values

    def cardinality(self) -> int | None:
        """The number of distinct value assignments ignoring conditions, or None if a range is continuous."""
        n = 1
        for d in self._domains:
            size = d.size()  # counted, never listed: a range may hold 2**53 points
            if size is None:
                return None
            n *= size
        return n

    # -- freezing -------------------------------------------------------------------------------------
    def freeze(self, values: dict[str, Any]) -> dict[str, Any]:
        """The architecture mapping for one assignment of the active domains.

        Raises:
            ConfigError: a label is unknown, an active domain has no value, or a value is outside its domain.
        """
        errors = []
        for label in values:
            if label not in self._by_label:
                errors.append(FieldError(label, f"not a domain of this space (domains: {', '.join(self._by_label)})"))
        for d in self._domains:
            if self.is_active(d, values):
                if d.label not in values:
                    errors.append(FieldError(d.path, f"no value given for the active domain {d.label!r}"))
                elif not d.contains(values[d.label]):
                    errors.append(FieldError(d.path, f"{values[d.label]!r} is not {d.describe()}"))
        if errors:
            raise ConfigError(errors, self.source)
        memo: dict[str, Any] = {}
        try:
            return self._freeze(self.template, values, memo, ())
        except FieldError as err:
            raise ConfigError([err], self.source) from None

    def _freeze(self, node: Any, values: dict[str, Any], memo: dict[str, Any], busy: tuple[str, ...]) -> Any:
        if isinstance(node, _Pick):
            d = node.domain
            if not self.is_active(d, values):
                return _DROP
            value = values[d.label]
            if node.options is None:
                return value
            picked = self._freeze(node.options[d.choices.index(value)], values, memo, busy)
            if node.shared:
                picked = {**picked, **self._freeze(node.shared, values, memo, busy)}
            return picked
        if isinstance(node, _Ref):
            return self._resolve_ref(node, values, memo, busy)
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                fv = self._freeze(v, values, memo, busy)
                if fv is not _DROP:
                    out[k] = fv
            return out
        if isinstance(node, list):
            return [fv for fv in (self._freeze(v, values, memo, busy) for v in node) if fv is not _DROP]
        return node

    def _resolve_ref(self, ref: _Ref, values: dict[str, Any], memo: dict[str, Any], busy: tuple[str, ...]) -> Any:
        if ref.name in busy:
            raise FieldError(ref.path, f"{ref.name!r} refers to itself through {' -> '.join(busy)}")
        pick = self._named[ref.name]
        if ref.name not in memo:
            memo[ref.name] = self._freeze(pick, values, memo, (*busy, ref.name))
        value = memo[ref.name]
        if value is _DROP:
            raise FieldError(ref.path, f"refers to {ref.name!r}, which is not active for this sample")
        raw = values.get(pick.domain.label)
        if ref.mapping is not None:
            key = raw
            if key not in ref.mapping:
                raise FieldError(join(ref.path, "map"), f"no entry for {key!r} (keys: {list(ref.mapping)})")
            return self._freeze(ref.mapping[key], values, memo, (*busy, ref.name))
        if ref.scale is not None:
            scaled = value * ref.scale
            return int(round(scaled)) if isinstance(value, int) else scaled
        return value


def space_from_dict(data: Any, source: str | None = None) -> SearchSpace:
    """Builds a :class:`SearchSpace` from parsed YAML (an architecture mapping with markers and ``study:``).

    Raises:
        ConfigError: every problem found, each ``FILE: field.path: message``.
    """
    if not isinstance(data, dict):
        raise ConfigError([FieldError("", "expected an architecture mapping with choices and ranges at the top level, "
                                          f"got {type(data).__name__}")], source)  # fmt: skip
    arch = {k: v for k, v in data.items() if k != "study"}
    parser = _Parser()
    template = parser.parse(arch, "", ())
    domains = parser.domains
    by_label: dict[str, Domain] = {}
    for d in domains:
        if d.label in by_label:
            parser.fail(d.path, f"the label {d.label!r} is already used by {by_label[d.label].path}")
        by_label[d.label] = d
    for ref in parser.refs:
        if ref.name not in parser.named:
            names = ", ".join(parser.named) or "none: add name: to a choice or range"
            parser.fail(join(ref.path, "ref"), f"no domain is named {ref.name!r} (names: {names})")
        elif ref.mapping is not None:
            dom = parser.named[ref.name].domain
            if isinstance(dom, Categorical):
                missing = [c for c in dom.choices if c not in ref.mapping]
                if missing:
                    parser.fail(join(ref.path, "map"), f"no entry for {', '.join(map(repr, missing))} of {ref.name!r}")
    # explicit conditions: resolve their paths to labels, then order domains after what they read
    for index, path, when in parser.raw_when:
        d = domains[index]
        conds = list(d.when)
        if not isinstance(when, dict) or not when:
            parser.fail(path, f"expected a mapping {{path or name: value or [values]}}, got {when!r}")
            continue
        for key, val in when.items():
            target = by_label.get(str(key)) or (parser.named[key].domain if key in parser.named else None)
            if target is None:
                parser.fail(join(path, str(key)), f"no domain has this path or name (domains: {', '.join(by_label)})")
                continue
            vals = tuple(val) if isinstance(val, list) else (val,)
            for v in vals:
                if not target.contains(v):
                    parser.fail(join(path, str(key)), f"{v!r} can never hold: {target.label} is {target.describe()}")
            conds.append(Condition(target.label, vals))
        domains[index] = _replace_when(d, tuple(conds))
    if parser.errors:
        raise ConfigError(parser.errors, source)
    domains = _ordered(domains, parser, source)
    _relink(template, {d.label: d for d in domains})
    for pick in parser.named.values():
        pick.domain = {d.label: d for d in domains}[pick.domain.label]
    space = SearchSpace(template, domains, parser.named, data.get("study"), source)
    _probe(space)
    return space


def _replace_when(d: Domain, when: tuple[Condition, ...]) -> Domain:
    import dataclasses

    return dataclasses.replace(d, when=when)


def _relink(node: Any, by_label: dict[str, Domain]) -> None:
    """Points placeholders at the final domain objects (conditions were added after parsing)."""
    if isinstance(node, _Pick):
        node.domain = by_label[node.domain.label]
        for opt in (*(node.options or ()), node.shared or {}):
            _relink(opt, by_label)
    elif isinstance(node, _Ref):
        for v in (node.mapping or {}).values():
            _relink(v, by_label)
    elif isinstance(node, dict):
        for v in node.values():
            _relink(v, by_label)
    elif isinstance(node, list):
        for v in node:
            _relink(v, by_label)


def _ordered(domains: list[Domain], parser: _Parser, source: str | None) -> list[Domain]:
    """Document order, moved so that each domain comes after the domains its conditions read."""
    out: list[Domain] = []
    placed: set[str] = set()
    pending = list(domains)
    while pending:
        progressed = False
        for d in list(pending):
            if all(c.label in placed for c in d.when):
                out.append(d)
                placed.add(d.label)
                pending.remove(d)
                progressed = True
        if not progressed:
            raise ConfigError([FieldError(d.path + ".when", "conditions form a cycle: "
                                          + ", ".join(f"{c}" for c in d.when)) for d in pending], source)  # fmt: skip
    return out


def _probe(space: SearchSpace) -> None:
    """Parses one frozen sample per option index, so that typos in any option fail at load time, and one with
    every range at its high end, so that a range past a field's ceiling (``repeat: {range: [1, 10**8]}``) fails
    at load time too rather than in every trial that draws a large value."""
    width = max([len(d.choices) for d in space.domains() if isinstance(d, Categorical)], default=1)
    ranges = any(not isinstance(d, Categorical) for d in space.domains())
    for i in range(width + ranges):
        high = i == width  # the extra pass: ranges at their high end, choices at their first option
        values: dict[str, Any] = {}
        for d in space.domains():
            if space.is_active(d, values):
                if isinstance(d, Categorical):
                    values[d.label] = d.choices[0 if high else min(i, len(d.choices) - 1)]
                else:
                    values[d.label] = d.high if high else d.low
        try:
            parse_spec(space.freeze(values), space.source)
        except ConfigError as err:
            raise ConfigError(err.errors, space.source) from None


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    """Loads and validates a search-space file.

    Example:
        >>> from planner.search import load_space
        >>> space = load_space("searchspaces/quickstart.yaml")
        >>> graph_data = space.freeze(space.sample(0))

    Raises:
        ConfigError: every problem, as ``FILE: field.path: message``.
    """
    return space_from_dict(read_yaml(path), str(path))


def loads_space(text: str, source: str | None = None) -> SearchSpace:
    """Parses a search space from YAML text."""
    return space_from_dict(parse_yaml(text, source), source)
