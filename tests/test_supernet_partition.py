"""``supernet.partition``: the sandwich's largest and smallest taken within each value of one of the space's
choices (a few-shot partition of the space, Zhao et al. 2021).

The extremes are checked against brute force over every candidate of a small space, for every choice it
has (a conditional one too); on every shipped space, each part's extremes are candidates of the supernet
its cover shapes; a recipe's partition trains one loss per part's extreme, is another run than the same
recipe without it, and a partition the space does not have is refused naming the recipe and the field.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import planner
from planner.cli import main as cli
from planner.errors import ConfigError, RunConflictError
from planner.search import SpaceSampler, load_space, loads_space
from planner.search._domains import FloatRange, IntRange
from planner.search._supernet import INACTIVE, _active, _graph
from support import SUPERNET_SPACE, supernet_setup
from trainers.supernet import Supernet, step_candidates
from trainers.supernet.bank import cover_slots

ROOT = Path(__file__).resolve().parents[1]
TINY = SUPERNET_SPACE.split("study:")[0]
SHIPPED = sorted((ROOT / "searchspaces").glob("*.yaml"))


def _partitionable(space) -> list[str]:
    return [d.label for d in space.domains()
            if not isinstance(d, FloatRange) and not (isinstance(d, IntRange) and d.size() > 16)]  # fmt: skip


def _every_candidate(space) -> list[tuple[dict, planner.EncoderGraph]]:
    """Every valid assignment of a small space (its active values) and its graph."""
    domains = space.domains()
    out, seen = [], set()
    for combo in itertools.product(*(d.grid() for d in domains)):
        active = _active(space, dict(zip([d.label for d in domains], combo)))
        key = json.dumps(active, sort_keys=True)
        graph = None if key in seen else _graph(space, active, "every candidate")
        seen.add(key)
        if graph is not None:
            out.append((active, graph))
    return out


@pytest.mark.parametrize("label", _partitionable(loads_space(TINY, "tiny.yaml")))
def test_each_parts_extremes_are_its_largest_and_smallest_candidates(label: str) -> None:
    space = loads_space(TINY, "tiny.yaml")
    sampler = SpaceSampler(space, samples=0, partition=label)
    every = _every_candidate(space)
    params: dict = {}
    for values, graph in every:
        params.setdefault(values.get(label, INACTIVE), []).append(planner.estimate(graph).params)
    assert sampler.parts() == [v for v in [*space.domain(label).grid(), INACTIVE] if v in params]
    roles = dict(sampler.extremes())
    assert len(roles) == 2 * len(params)
    for value, sizes in params.items():
        assert planner.estimate(roles[f"largest[{value}]"]).params == max(sizes), value
        assert planner.estimate(roles[f"smallest[{value}]"]).params == min(sizes), value
    unpartitioned = SpaceSampler(space, samples=0)
    assert sampler.fingerprint() == unpartitioned.fingerprint()  # the cover (the tensors' shapes) is the same


def test_without_a_partition_the_extremes_are_the_spaces() -> None:
    sampler = SpaceSampler(loads_space(TINY, "tiny.yaml"), samples=4)
    assert sampler.parts() == []
    assert sampler.extremes() == [("largest", sampler.largest()), ("smallest", sampler.smallest())]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_parts_extremes_fit_the_supernet_of_the_cover(path: Path) -> None:
    space = load_space(path)
    labels = [label for label in _partitionable(space) if len(space.domain(label).grid()) > 1]
    assert labels, f"{path.name}: no choice to partition by"
    base = SpaceSampler(space, samples=4)
    net = Supernet(cover_slots(base.cover)[0])
    for label in labels:
        sampler = base.partitioned(label)
        extremes = sampler.extremes()
        assert len(extremes) == 2 * len(sampler.parts()) >= 2
        sizes = [planner.estimate(g).params for _, g in extremes]
        assert max(sizes) == planner.estimate(base.largest()).params  # the space's largest is a part's largest
        assert min(sizes) <= planner.estimate(base.smallest()).params  # a part's floor may be smaller still
        for role, graph in extremes:
            assert net.fits(graph) == [], f"{path.name}: partition {label}: {role}"


def test_a_step_trains_every_parts_extremes_then_the_same_random_candidates() -> None:
    space = loads_space(TINY, "tiny.yaml")
    plain, parted = SpaceSampler(space, samples=4), SpaceSampler(space, samples=4, partition="block")
    a, b = step_candidates(plain, 3, 7, 2), step_candidates(parted, 3, 7, 2)
    blocks = parted.parts()
    assert [r for r, _ in b] == [f"{e}[{v}]" for v in blocks for e in ("largest", "smallest")] + ["random0", "random1"]
    assert [planner.dumps(g) for _, g in a[2:]] == [planner.dumps(g) for _, g in b[-2:]]
    kinds = {r: g.nodes("layers")[0].kind for r, g in b[:-2]}
    assert {kinds[f"largest[{v}]"] for v in blocks} == {"transformer", "conformer"}


def test_a_partition_the_space_does_not_have_is_refused() -> None:
    space = loads_space(TINY, "tiny.yaml")
    with pytest.raises(ConfigError, match=r"supernet\.partition: 'blocks' is not a choice of tiny\.yaml.*block"):
        SpaceSampler(space, samples=0, partition="blocks")
    ranged = loads_space(TINY.replace("{choice: [16, 32], name: ffn}", "{range: [16, 64], name: ffn}"), "r.yaml")
    with pytest.raises(ConfigError, match=r"supernet\.partition: 'ffn' in r\.yaml is a range of 49 integers"):
        SpaceSampler(ranged, samples=0, partition="ffn")
    assert SpaceSampler(space, samples=0).partitioned("block").parts() == ["transformer", "conformer"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("partition")
    out = supernet_setup(root, steps=2)
    parted = root / "parted.yaml"
    parted.write_text(out["recipe"].read_text().replace("{random: 1, cover: 8, recalibrate: 1}",
                                                        "{random: 1, cover: 8, recalibrate: 1, partition: block}"))  # fmt: skip
    return out | {"parted": parted}


def test_a_partitioned_run_logs_each_parts_extremes_and_is_another_run(setup: dict[str, Path], capsys) -> None:
    out = setup["root"] / "parted-run"
    args = ["supernet", "train", str(setup["space"]), "--out", str(out)]
    assert cli([*args, "--recipe", str(setup["parted"])]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    roles = {f"{e}[{v}]" for v in ("transformer", "conformer") for e in ("largest", "smallest")}
    assert set(rows[-1]["layers"]) == roles | {"random0"}
    assert json.loads((out / "supernet.json").read_text())["partition"] == "block"
    capsys.readouterr()
    assert cli([*args, "--recipe", str(setup["recipe"])]) == RunConflictError.exit_code  # the folder, unpartitioned
    assert str(out) in capsys.readouterr().err


def test_a_recipe_partition_the_space_lacks_exits_2_naming_the_recipe(setup: dict[str, Path], capsys) -> None:
    bad = setup["root"] / "bad.yaml"
    bad.write_text(setup["parted"].read_text().replace("partition: block", "partition: kind"))
    out = setup["root"] / "never"
    assert cli(["supernet", "train", str(setup["space"]), "--recipe", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: supernet.partition: 'kind' is not a choice of" in err and "Traceback" not in err
    assert not out.exists()
