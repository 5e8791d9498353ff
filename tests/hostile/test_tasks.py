"""Absurd and non-finite values in probe task files (``planner evaluate --task``), and the task loss's weight.

Each CLI case is refused by ``planner validate`` (the loader ``planner evaluate`` uses) with exit 2, no
traceback, the file and the field named.
"""

from __future__ import annotations

import pytest

from hostile.support import refused
from planner.errors import ConfigError

pytestmark = pytest.mark.usefixtures("hang_guard")  # each case must be refused within GUARD_S seconds

TASK = "format: 1\nkind: classification\ntrain: train.tsv\ntest: test.tsv\n"

CASES = [
    ("lr nan", "lr: .nan", "lr", "not a finite number"),
    ("lr inf", "lr: .inf", "lr", "not a finite number"),
    ("lr zero", "lr: 0", "lr", "must be positive"),
    ("max_seconds nan", "max_seconds: .nan", "max_seconds", "not a finite number"),
    ("max_seconds negative", "max_seconds: -1.0", "max_seconds", "must be positive"),
    ("max_seconds a year", "max_seconds: 31536000.0", "max_seconds", "exceeds the ceiling of 86,400"),
    ("steps 1e12", "steps: 1000000000000", "steps", "exceeds the ceiling of 10,000,000"),
    ("batch_size 1e9", "batch_size: 1000000000", "batch_size", "exceeds the ceiling of 65,536"),
    ("sample_rate 1e12", "sample_rate: 1000000000000", "sample_rate", "exceeds the ceiling of 1,000,000"),
    ("weight_decay negative", "weight_decay: -0.1", "weight_decay", "must be at least 0"),
    ("weight_decay inf", "weight_decay: .inf", "weight_decay", "not a finite number"),
    ("seed negative", "seed: -1", "seed", "is not a seed"),
    ("seed 2**64", f"seed: {2**64}", "seed", "is not a seed"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_task_values(tmp_path, cli, case) -> None:
    _, line, field, message = case
    path = tmp_path / "task.yaml"
    path.write_text(TASK + line + "\n", encoding="utf-8")
    refused(cli(["validate", path]), names=[f"{path}: {field}", message], code=2)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0])
def test_a_task_loss_weight_must_be_finite(weight) -> None:
    from trainers.task import TaskDistillLoss

    with pytest.raises(ConfigError, match="loss.distill_weight: .* is not a weight"):
        TaskDistillLoss(None, None, weight)  # type: ignore[arg-type]  # refused before either is used
