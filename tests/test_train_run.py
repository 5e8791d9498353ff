"""End-to-end distillation runs: metrics, exact resume after SIGKILL, refusing another run's folder, DeepSpeed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from support import DATA, kill_after_first_checkpoint, recipe_text, ta_teacher_yaml
from trainers import RunConflictError, latest_checkpoint, loads_recipe, train

STUDENT = DATA / "tiny-student.yaml"


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture
def recipe_file(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="6"))
    return path


def test_train_writes_metrics_checkpoints_and_student(tmp_path: Path, recipe_file: Path) -> None:
    recipe = loads_recipe(recipe_file.read_text(), base_dir=str(tmp_path))
    result = train(planner.load(STUDENT), recipe, tmp_path / "run", log=None)
    assert result.step == 6 and result.resumed_from == 0
    losses = [loss for _, loss in _losses(tmp_path / "run")]
    assert len(losses) == 6 and all(v == v and v > 0 for v in losses)
    row = result.metrics[-1]
    assert row["masked"] > 0 and row["unmasked"] > 0 and row["examples_per_s"] > 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    state = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert set(state) == set(planner.materialize(planner.load(STUDENT)).state_dict())
    # the same call again finds the run finished and does nothing
    again = train(planner.load(STUDENT), recipe, tmp_path / "run", log=None)
    assert again.resumed_from == 6 and again.metrics == [] and len(_losses(tmp_path / "run")) == 6


def test_sigkill_and_resume_gives_the_uninterrupted_loss_curve(tmp_path: Path, recipe_file: Path) -> None:
    reference = tmp_path / "reference"
    assert main(["train", str(STUDENT), "--recipe", str(recipe_file), "--out", str(reference)]) == 0
    killed = tmp_path / "killed"
    assert kill_after_first_checkpoint(STUDENT, recipe_file, killed) < 6
    assert main(["train", str(STUDENT), "--recipe", str(recipe_file), "--out", str(killed)]) == 0
    # Exact: the same float ops in the same order on the CPU, from restored weights, optimizer, RNG and data position.
    assert _losses(killed) == _losses(reference)


def test_refuses_a_folder_holding_another_run(
    tmp_path: Path, recipe_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = loads_recipe(recipe_file.read_text().replace("steps: 6", "steps: 1"), base_dir=str(tmp_path))
    train(planner.load(STUDENT), recipe, tmp_path / "run", log=None)
    other = loads_recipe(recipe_file.read_text().replace("steps: 6", "steps: 2"), base_dir=str(tmp_path))
    with pytest.raises(RunConflictError, match="different recipe"):
        train(planner.load(STUDENT), other, tmp_path / "run", log=None)
    code = main(
        ["train", str(DATA / "tiny-teacher.yaml"), "--recipe", str(recipe_file), "--out", str(tmp_path / "run")]
    )
    assert code == 3 and "different architecture" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(RunConflictError, match="not a training run"):
        train(planner.load(STUDENT), recipe, tmp_path / "junk", log=None)


def test_planner_teacher_without_masking(tmp_path: Path, corpus: Path) -> None:
    model = planner.materialize(planner.load(DATA / "tiny-teacher.yaml"))
    torch.save(model.state_dict(), tmp_path / "t.pt")
    text = recipe_text(f"{{kind: architecture, arch: {DATA / 'tiny-teacher.yaml'}, checkpoint: t.pt}}", corpus,
                       loss="{layers: [[0, 0], [1, 2]], distance: l1_cosine}", steps="2")  # fmt: skip
    result = train(planner.load(STUDENT), loads_recipe(text, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    assert result.step == 2 and result.metrics[-1]["masked"] == 0.0


def test_deepspeed_engine_matches_torch_and_resumes(tmp_path: Path, recipe_file: Path) -> None:
    pytest.importorskip("deepspeed")
    text = recipe_file.read_text().replace("steps: 6", "steps: 3") + "engine: deepspeed\n"
    (tmp_path / "ds.yaml").write_text(text)
    recipe = loads_recipe(text, base_dir=str(tmp_path))
    result = train(planner.load(STUDENT), recipe, tmp_path / "ds", log=None)
    assert result.step == 3 and (latest_checkpoint(tmp_path / "ds") / "state").is_dir()
    again = train(planner.load(STUDENT), recipe, tmp_path / "ds", log=None)  # loads DeepSpeed's checkpoint
    assert again.resumed_from == 3
    torch_run = loads_recipe(text.replace("engine: deepspeed", "engine: torch"), base_dir=str(tmp_path))
    ref = train(planner.load(STUDENT), torch_run, tmp_path / "torch", log=None)
    # fp32, ZeRO stage 0, one process: DeepSpeed's step is the torch step (clipping computed its own way)
    assert [r["loss"] for r in result.metrics] == pytest.approx([r["loss"] for r in ref.metrics], rel=1e-4)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_in_a_log(tmp_path: Path, recipe_file: Path) -> None:
    recipe = loads_recipe(recipe_file.read_text().replace("steps: 6", "steps: 4"), base_dir=str(tmp_path))
    terminal, logfile = _Terminal(), io.StringIO()
    train(planner.load(STUDENT), recipe, tmp_path / "tty", log=terminal)
    train(planner.load(STUDENT), recipe, tmp_path / "file", log=logfile)
    bar = terminal.getvalue()
    assert "\r" in bar and "4/4" in bar and "loss=" in bar and "ex_s=" in bar, bar  # tqdm redraws in place
    lines = logfile.getvalue().splitlines()
    assert "\r" not in logfile.getvalue() and [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], lines
    assert _losses(tmp_path / "tty") == _losses(tmp_path / "file")
    # the same command again resumes: it says so above the bar, which starts at the checkpoint's step
    terminal = _Terminal()
    train(planner.load(STUDENT), recipe, tmp_path / "tty", log=terminal)
    assert terminal.getvalue().startswith(f"resuming {tmp_path / 'tty'} from step 4\n"), terminal.getvalue()
    assert "4/4" in terminal.getvalue() and "3/4" not in terminal.getvalue()
