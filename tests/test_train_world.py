"""The pieces of multi-process training that one process can test: reading a launcher's environment,
sharding the batch stream, moving batches and the teacher to the engine's device, and reading old or torn
run files. The jobs themselves: tests/test_train_multiprocess.py.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from support import DATA, recipe_text, ta_teacher_yaml
from trainers import BatchStream, loads_recipe, train
from trainers.data import Batch, collate
from trainers.distributed import LaunchError, World, world_from_env
from trainers.engine import single_process_env
from trainers.run import RunConflictError, _read_state, _truncate_metrics
from trainers.teacher import Teacher

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_SIZE",
               "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # fmt: skip


# -- the launcher's environment ------------------------------------------------------------------------


def test_world_from_the_launchers_environment() -> None:
    assert world_from_env({}, cuda=False) == World()
    # deepspeed launcher / torchrun
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert world_from_env(env, cuda=False) == World(rank=3, size=4, local_rank=1)
    # OpenMPI (DeepSpeed's openmpi runner): copied to the variables torch and DeepSpeed read
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    assert world_from_env(env, cuda=False) == World(rank=1, size=2, local_rank=1)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("1", "2", "1")
    # MPICH / Intel MPI, without a local rank: the CPU does not need one
    env = {"PMI_RANK": "0", "PMI_SIZE": "2"}
    assert world_from_env(env, cuda=False) == World(rank=0, size=2, local_rank=0)


@pytest.mark.parametrize(("env", "cuda", "message"), [
    ({"WORLD_SIZE": "2"}, False, "WORLD_SIZE=2 but RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, False, "RANK=2 is outside 0..1"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, False, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "0"}, False, "WORLD_SIZE=0 must be at least 1"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, True, "LOCAL_RANK is not set"),
])  # fmt: skip
def test_a_bad_launch_environment_names_the_variable(env: dict[str, str], cuda: bool, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        world_from_env(env, cuda=cuda)


def test_planner_train_names_a_bad_launch_variable(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["train", str(DATA / "tiny-student.yaml"), "--recipe", str(root / "recipes" / "distill.yaml"),
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "run").exists()
    assert "environment: WORLD_SIZE=2 but RANK is not set" in err, err


def test_single_process_env_keeps_a_launchers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # mpirun: RANK is set later, from OMPI_COMM_WORLD_RANK
    single_process_env()
    assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    single_process_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("1", "2") and "MASTER_PORT" not in os.environ
    monkeypatch.setenv("WORLD_SIZE", "1")  # left by a job of one in the processes it starts: still a job of one
    monkeypatch.delenv("RANK")
    single_process_env()  # a job of one on a free port
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "1", "0")
    assert int(os.environ["MASTER_PORT"]) > 0


# -- sharding and devices ------------------------------------------------------------------------------


def test_processes_take_the_one_streams_batches_in_turn(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stream() -> BatchStream:
        return BatchStream([str(corpus)], batch_seconds=1.0, max_seconds=0.5, seed=7)

    single = stream()
    per_epoch = len(single.epoch_batches(0))
    steps = per_epoch + 1  # two processes: the job crosses two epoch boundaries
    sequence = [next(single).paths for _ in range(2 * steps)]
    ranks = [stream(), stream()]
    taken = [[s.take(rank, 2).paths for _ in range(steps)] for rank, s in enumerate(ranks)]
    assert [p for pair in zip(*taken) for p in pair] == sequence  # rank r: batches r, r + 2, r + 4, ...
    assert ranks[0].position == ranks[1].position == single.position  # the global position, saved once
    # a skipped batch is never read
    reads: list[int] = []
    load = BatchStream._load
    monkeypatch.setattr(BatchStream, "_load", lambda self, i: reads.append(i) or load(self, i))
    one = stream()
    batch = one.take(1, 2)
    assert len(reads) == batch.size and one.position == (0, 2)
    assert stream().take().paths == sequence[0]  # one process: next(stream)


def test_batch_to_moves_every_tensor() -> None:
    batch = collate([torch.randn(300), torch.randn(200)], ["a", "b"])
    assert batch.to("cpu") is batch  # already there: nothing is copied
    meta = batch.to("meta")
    assert meta.waveforms.device.type == meta.lengths.device.type == "meta"
    assert meta.waveforms.shape == batch.waveforms.shape and meta.paths == batch.paths and meta.features is None
    feats = Batch(batch.waveforms, batch.lengths, batch.paths, torch.zeros(2, 3, 4), torch.tensor([3, 2]))
    assert feats.to("meta").features.device.type == feats.to("meta").feature_lengths.device.type == "meta"


def test_batches_and_teacher_follow_the_engines_device(tmp_path: Path, corpus: Path, ta_teacher_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """There is no GPU here: the engine reports ``cpu:0``, a device object that is not ``cpu`` (so only a
    move to the engine's device records it) on which CPU tensors still compute, and the moves are recorded."""
    import trainers.engine

    run_module = importlib.import_module("trainers.run")  # where the run loop looks up build_engine
    marked = torch.device("cpu", 0)
    assert marked != torch.device("cpu")
    build = trainers.engine.build_engine

    def build_marked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        engine = build(*args, **kwargs)
        engine.device = marked
        return engine

    moves: list[tuple[str, torch.device]] = []
    batch_to, module_to = Batch.to, torch.nn.Module.to
    monkeypatch.setattr(run_module, "build_engine", build_marked)
    monkeypatch.setattr(Batch, "to", lambda self, device: moves.append(("batch", device)) or batch_to(self, device))
    monkeypatch.setattr(
        Teacher, "to", lambda self, device: moves.append(("teacher", device)) or module_to(self, device)
    )
    recipe = loads_recipe(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="2"), base_dir=str(tmp_path))
    train(planner.load(DATA / "tiny-student.yaml"), recipe, tmp_path / "run", log=None)
    assert moves == [("teacher", marked), ("batch", marked), ("batch", marked)]


# -- run files -----------------------------------------------------------------------------------------


def test_a_torn_last_metrics_row_is_dropped_a_corrupt_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("\n".join(rows) + '\n{"step": 4, "lo')  # killed mid-write
    _truncate_metrics(path, 2)
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    path.write_text(rows[0] + "\nnot json\n" + rows[1] + "\n")
    with pytest.raises(RunConflictError, match=r"metrics.jsonl: line 2 is not JSON"):
        _truncate_metrics(path, 2)


def test_a_one_process_checkpoint_of_the_first_format_resumes(tmp_path: Path) -> None:
    state = {"step": 4, "position": [0, 4], "python_rng": (3, (), None), "numpy_rng": ("MT19937",),
             "torch_rng": torch.get_rng_state()}  # fmt: skip
    (tmp_path / "step-00000004").mkdir()
    torch.save(state, tmp_path / "step-00000004" / "trainer.pt")
    read = _read_state(tmp_path, tmp_path / "step-00000004", World())
    assert read["step"] == 4 and len(read["rng"]) == 1 and torch.equal(read["rng"][0]["torch"], state["torch_rng"])
    with pytest.raises(RunConflictError, match="written by a job of 1 process"):
        _read_state(tmp_path, tmp_path / "step-00000004", World(rank=0, size=2))
