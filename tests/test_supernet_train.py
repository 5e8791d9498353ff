"""``planner supernet train``, the ``supernet`` evaluator, the export of inherited weights and ``--init``.

A tiny space (width x depth x block kind x kernel x weight bits x 2:4) distilled from the tiny torchaudio
HuBERT teacher on six synthetic utterances: the run folder, its metrics (one loss per sandwich member),
an exact resume after SIGKILL, a search scored by the supernet, a Pareto export with weights that
``planner train --init`` starts from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import planner
from planner.cli import main as cli
from planner.errors import SupernetError
from planner.search import SearchOptions, SpaceSampler, load_space, run_search
from support import SUPERNET_SPACE as SPACE
from support import launch_ok, supernet_setup
from trainers import load_recipe
from trainers.supernet import load_supernet, step_candidates, train_supernet
from trainers.train import build_student

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return supernet_setup(tmp_path_factory.mktemp("supernet"))


@pytest.fixture(scope="module")
def trained(setup: dict[str, Path]) -> Path:
    out = setup["root"] / "super"
    assert cli(["supernet", "train", str(setup["space"]), "--recipe", str(setup["recipe"]), "--out", str(out)]) == 0
    return out


def test_the_run_folder_holds_the_supernet_and_a_loss_per_sandwich_member(trained: Path) -> None:
    info = json.loads((trained / "supernet.json").read_text())
    assert info["space"] == "space" and info["steps"] == 6 and info["slots"]
    net, _ = load_supernet(trained)
    assert all(torch.isfinite(t).all() for t in net.tensors)
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert set(rows[0]["layers"]) == {"largest", "smallest", "random0"} and "valid_loss" in rows[0]
    assert (trained / "best" / "supernet.safetensors").is_file()
    assert json.loads((trained / "run.json").read_text())["type"] == "planner-supernet-run"


def test_the_candidates_of_a_step_are_a_function_of_seed_and_step(setup: dict[str, Path]) -> None:
    sampler = SpaceSampler(load_space(setup["space"]), samples=8)
    a = [planner.dumps(g) for _, g in step_candidates(sampler, 3, 5, 2)]
    b = [planner.dumps(g) for _, g in step_candidates(sampler, 3, 5, 2)]
    c = [planner.dumps(g) for _, g in step_candidates(sampler, 3, 6, 2)]
    assert a == b and a != c
    assert planner.estimate(planner.loads(a[0])).params >= planner.estimate(planner.loads(a[1])).params


def test_a_sigkilled_run_resumes_to_the_uninterrupted_weights(setup: dict[str, Path], trained: Path) -> None:
    out = setup["root"] / "killed"
    script = (
        "import time, sys\nfrom pathlib import Path\nsys.argv = ['planner']\n"
        "from planner.search import SpaceSampler, load_space\nfrom trainers import load_recipe\n"
        "from trainers.supernet import train_supernet\n"
        f"space, recipe = {str(setup['space'])!r}, load_recipe({str(setup['recipe'])!r})\n"
        "sampler = SpaceSampler(load_space(space), samples=recipe.supernet.cover, seed=recipe.seed)\n"
        f"train_supernet(sampler, recipe, {str(out)!r}, space_text=Path(space).read_text(), name='space',\n"
        "               on_step=lambda s, m: time.sleep(0.5))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {
        "OMP_NUM_THREADS": str(torch.get_num_threads())
    }
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "supernet.safetensors").exists()
    assert cli(["supernet", "train", str(setup["space"]), "--recipe", str(setup["recipe"]), "--out", str(out)]) == 0
    a, b = load_file(str(trained / "supernet.safetensors")), load_file(str(out / "supernet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda p: [{k: v for k, v in json.loads(x).items() if k != "examples_per_s"}  # noqa: E731
                      for x in (p / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert rows(out) == rows(trained)


def test_another_space_on_the_same_folder_is_refused(setup: dict[str, Path], trained: Path, capsys) -> None:
    other = setup["root"] / "other.yaml"
    other.write_text(setup["space"].read_text().replace("[16, 32], name: width", "[16, 24], name: width"))
    assert cli(["supernet", "train", str(other), "--recipe", str(setup["recipe"]), "--out", str(trained)]) != 0
    assert str(trained) in capsys.readouterr().err


def test_search_scores_with_the_supernet_and_exports_weights_train_init_loads(setup: dict[str, Path],
                                                                            trained: Path) -> None:  # fmt: skip
    sampler = SpaceSampler(load_space(setup["space"]), samples=0)
    budget = (planner.estimate(sampler.largest()).params + planner.estimate(sampler.smallest()).params) // 2
    space = setup["root"] / "study.yaml"
    space.write_text(SPACE.replace("BUDGET", str(budget)).replace("CKPT", str(trained))
                     .replace("RECIPE", str(setup["recipe"])))  # fmt: skip
    storage = f"sqlite:///{setup['root'] / 'study.db'}"
    study = run_search(str(space), SearchOptions(storage=storage, progress=False))
    scored = [t for t in study.trials if t.user_attrs.get("feasible")]
    assert scored and all(0 < t.user_attrs["quality"]["supernet_loss"] < float("inf") for t in scored)
    assert all("quality" not in t.user_attrs or not t.user_attrs["quality"]
               for t in study.trials if t.user_attrs.get("feasible") is False)  # over budget: never built  # fmt: skip
    export = setup["root"] / "pareto"
    assert cli(["pareto", "--study", "tiny-super", "--storage", storage, "--export", str(export)]) == 0
    doc = json.loads((export / "pareto.json").read_text())
    point = doc["points"][0]
    weights = export / point["weights"]
    graph = planner.load(export / point["architecture"])
    recipe = load_recipe(setup["distill"])
    from trainers.recipe import with_init

    student = build_student(graph, with_init(recipe, str(weights)))
    state = load_file(str(weights))
    assert all(torch.equal(student.state_dict()[k], v) for k, v in state.items())
    run = setup["root"] / "from-super"
    assert cli(["train", str(export / point["architecture"]), "--recipe", str(setup["distill"]), "--init", str(weights),
                "--out", str(run)]) == 0  # fmt: skip
    assert (run / "student.pt").is_file()


def test_a_candidate_of_another_space_is_refused_by_the_scorer(setup: dict[str, Path], trained: Path) -> None:
    from trainers.supernet import SupernetScorer

    scorer = SupernetScorer(trained, load_recipe(setup["recipe"]))
    from planner.search import loads_space

    wider = SPACE.split("study:")[0].replace("[16, 32], name: width", "[16, 64], name: width")
    wide = SpaceSampler(loads_space(wider, "wider.yaml"), samples=0).largest()
    with pytest.raises(SupernetError, match="not a candidate"):
        scorer.score(wide)


def test_fewer_held_out_batches_score_the_first_of_them(setup: dict[str, Path], trained: Path) -> None:
    """``batches: N`` (the evaluator's, the scorer's) is the loss over the first N held-out batches by utterance;
    0 is refused, by the scorer and by the study schema."""
    from planner.config import parse_kind
    from planner.errors import ConfigError, FieldError
    from planner.search import EVALUATORS
    from trainers.supernet import SupernetScorer

    recipe = load_recipe(setup["recipe"])
    graph = SpaceSampler(load_space(setup["space"]), samples=0).largest()
    every = SupernetScorer(trained, recipe)
    model = every.extract(graph)
    terms = list(every.held_out_terms(model, graph))
    assert len(terms) == every.valid_batches >= 2
    one = SupernetScorer(trained, recipe, batches=1)
    assert one.score(graph)["supernet_loss"] == terms[0][0]
    n = sum(size for _, size in terms)
    assert every.score(graph)["supernet_loss"] == pytest.approx(sum(v * k for v, k in terms) / n, rel=1e-12, abs=0)
    with pytest.raises(ConfigError, match="batches"):
        SupernetScorer(trained, recipe, batches=0)
    doc = {"kind": "supernet", "checkpoint": str(trained), "recipe": str(setup["recipe"]), "batches": 0}
    with pytest.raises(FieldError, match=r"study.evaluator.batches: 0 must be at least 1"):
        parse_kind(dict(EVALUATORS.items()), doc, "study.evaluator", "evaluator")


def test_train_supernet_refuses_a_task_loss(setup: dict[str, Path]) -> None:
    from planner.errors import ConfigError

    recipe = load_recipe(setup["recipe"])
    import dataclasses

    task = dataclasses.replace(recipe, loss=dataclasses.replace(recipe.loss, kind="classification"))
    with pytest.raises(ConfigError, match="distillation"):
        train_supernet(SpaceSampler(load_space(setup["space"]), samples=0), task, setup["root"] / "x",
                       space_text="", name="x")  # fmt: skip


def test_a_space_without_projection_heads_is_refused_before_the_folder_is_claimed(setup: dict[str, Path],
                                                                                  capsys) -> None:  # fmt: skip
    text = setup["space"].read_text()
    headless = setup["root"] / "headless.yaml"
    headless.write_text(text[: text.index("heads:\n")] + text[text.index("compression:") :])
    out = setup["root"] / "headless-run"
    assert cli(["supernet", "train", str(headless), "--recipe", str(setup["recipe"]), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "projection_heads" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("engine", ["torchrun", "deepspeed"])
def test_supernet_trains_on_two_torch_processes_and_on_deepspeed(setup: dict[str, Path], engine: str) -> None:
    recipe = setup["root"] / f"super-{engine}.yaml"
    text = setup["recipe"].read_text().replace("steps: 6", "steps: 2")
    if engine == "deepspeed":
        text = "format: 2\nengine: {kind: deepspeed, zero_stage: 0, precision: fp32}\n" + text
    recipe.write_text(text)
    out = setup["root"] / f"run-{engine}"
    args = ["supernet", "train", str(setup["space"]), "--recipe", str(recipe), "--out", str(out)]
    if engine == "torchrun":  # data parallel: each process its batch, the same candidates, equal weights at the end
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "planner.cli", *args]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "planner.cli", *args]
    launch_ok(cmd)
    net, info = load_supernet(out)
    assert info["steps"] == 2 and all(torch.isfinite(t).all() for t in net.tensors)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and set(rows[-1]["layers"]) == {"largest", "smallest", "random0"}
