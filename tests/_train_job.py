"""Test helper: one process of a launched training job, for what the ``planner train`` command cannot do.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/_train_job.py ARCH RECIPE OUT SLEEP
    deepspeed --num_gpus 2 tests/_train_job.py ARCH RECIPE OUT SLEEP

Runs ``trainers.train(ARCH, RECIPE, OUT)``, sleeping ``SLEEP`` seconds after every step (so that a test can
kill the job mid-run), and at the end saves this process's model state dict to ``OUT/rank-R.pt`` (so that
a test can compare the processes' replicas). A ``--local_rank=N`` argument (the deepspeed launcher's) is
ignored: ``LOCAL_RANK`` is in the environment.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import torch

import planner
import trainers

run_module = importlib.import_module("trainers.run")  # where the run loop looks up build_engine


def main() -> None:
    arch, recipe, out, sleep = [a for a in sys.argv[1:] if not a.startswith("--local")]
    engines = []
    build = run_module.build_engine

    def keep(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        engines.append(build(*args, **kwargs))
        return engines[-1]

    run_module.build_engine = keep
    trainers.train(planner.load(arch), trainers.load_recipe(recipe), out, log=None,
                   on_step=lambda step, metrics: time.sleep(float(sleep)))  # fmt: skip
    torch.save(engines[0].module.state_dict(), Path(out) / f"rank-{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
