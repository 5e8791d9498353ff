"""``evaluate``: a downstream linear probe on a trained run's frozen features (``planner evaluate``).

Task file (``TASK.yaml``; relative paths against its folder; unknown keys are errors)::

    format: 1
    kind: classification
    train: train.tsv        # path<TAB>label per line (paths relative to the TSV's folder)
    test: test.tsv          # held out: accuracy is reported on it
    features: weighted_sum  # or last (the encoder output)
    steps: 300              # Adam steps of the linear classifier
    lr: 1.0e-2
    batch_size: 32
    seed: 0

Features: each utterance is run alone through the frozen encoder (eval mode, compression as trained), every
hidden state is mean-pooled over its frames, and the probe is a linear classifier on either the encoder
output or a softmax-weighted sum of the layers (SUPERB's weighted sum; weights learned with the probe;
pooling then weighting equals weighting then pooling). Features are standardised with the training set's
mean and deviation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.errors import ConfigError, FieldError, PlannerError
from planner.ir._schema import from_data
from planner.ir.io import read_yaml
from trainers.data import collate, read_audio, read_labels
from trainers.task import mean_pool

__all__ = ["ProbeTask", "evaluate", "load_task", "load_run_model"]


@dataclass(frozen=True)
class ProbeTask:
    """A linear-probe task (see the module docstring). ``base_dir`` anchors relative paths."""

    train: str
    test: str
    kind: Literal["classification"] = "classification"
    features: Literal["weighted_sum", "last"] = "weighted_sum"
    steps: int = 300
    lr: float = 1.0e-2
    weight_decay: float = 0.0
    batch_size: int = 32
    sample_rate: int = 16000
    max_seconds: float = 15.0
    seed: int = 0
    format: int = 1

    def check(self) -> None:
        if self.format != 1:
            raise FieldError("format", f"{self.format} is not a supported task format (this planner reads 1)")
        for name in ("steps", "batch_size", "sample_rate"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)} must be positive")
        for name in ("lr", "max_seconds"):
            if getattr(self, name) <= 0:
                raise FieldError(name, f"{getattr(self, name)} must be positive")


def load_task(path: str | os.PathLike[str]) -> tuple[ProbeTask, Path]:
    """Loads and validates a task file; returns it and its folder.

    Raises:
        ConfigError: ``TASK.yaml: field: problem`` (unknown keys included).
    """
    try:
        task = from_data(ProbeTask, read_yaml(Path(path)))
    except FieldError as err:
        raise ConfigError([err], str(path)) from None
    return task, Path(path).resolve().parent


def load_run_model(run: str | os.PathLike[str], checkpoint: str | None = None) -> tuple[Any, nn.Module]:
    """The run's architecture and its trained encoder (``student.pt``, else the newest checkpoint), in eval mode."""
    import planner
    from trainers.train import latest_checkpoint

    run = Path(run)
    if not (run / "arch.yaml").is_file():
        raise PlannerError(f"{run}: not a training run (no arch.yaml)")
    graph = planner.load(run / "arch.yaml")
    model = planner.materialize(graph)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    elif (run / "student.pt").is_file():
        state = torch.load(run / "student.pt", map_location="cpu", weights_only=True)
    else:
        ckpt = latest_checkpoint(run)
        if ckpt is None or not (ckpt / "engine.pt").is_file():
            raise PlannerError(f"{run}: no student.pt and no torch-engine checkpoint to evaluate")
        state = torch.load(ckpt / "engine.pt", map_location="cpu", weights_only=True)["model"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if any(k.startswith("student.") for k in state):  # a TaskModel's state: the encoder part
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PlannerError(f"{run}: the weights do not fit {graph.name} ({err})") from err
    return graph, model.eval()


@torch.no_grad()
def _pooled(model: nn.Module, graph: Any, paths: list[str], task: ProbeTask) -> Tensor:
    """``(N, L + 1, D)``: every hidden state and the output, mean-pooled, one utterance at a time."""
    rows = []
    for p in paths:
        wav = read_audio(p, task.sample_rate)[: int(task.max_seconds * task.sample_rate)]
        b = collate([wav], [p], graph.spec.input)
        x, xl = (b.features, b.feature_lengths) if b.features is not None else (b.waveforms, b.lengths)
        out = model(x, xl)
        feats = [mean_pool(h, hl) for h, hl in zip(out.hidden_states, out.hidden_lengths)]
        feats.append(mean_pool(out.output, out.lengths))
        if len({f.shape[-1] for f in feats}) != 1 and task.features == "weighted_sum":
            raise PlannerError(f"{graph.name}: layers of different widths cannot be summed; use features: last")
        rows.append(torch.stack(feats, 1)[0] if task.features == "weighted_sum" else feats[-1])
    return torch.stack(rows)


def _read(task_file: Path, base: Path, where: str, value: str) -> dict[str, str]:
    path = Path(value) if os.path.isabs(value) else base / value
    try:
        return read_labels(path, str(path.parent))
    except OSError as err:
        raise ConfigError([FieldError(where, f"{path}: cannot read ({err.strerror})")], str(task_file)) from None


def evaluate(run: str | os.PathLike[str], task_file: str | os.PathLike[str], *, checkpoint: str | None = None) -> dict[str, Any]:
    """Trains a linear probe on the run's frozen features and returns its held-out accuracy.

    Returns:
        ``{"accuracy", "chance", "train_accuracy", "classes", "n_train", "n_test", "features",
        "layer_weights", "run", "task", "steps"}``; ``chance`` is the held-out rate of its most
        frequent class.

    Example:
        >>> evaluate("runs/a1", "tasks/digits.yaml")["accuracy"]  # doctest: +SKIP
        0.92
    """
    task, base = load_task(task_file)
    train_labels = _read(Path(task_file), base, "train", task.train)
    test_labels = _read(Path(task_file), base, "test", task.test)
    classes = sorted(set(train_labels.values()))
    unseen = sorted(set(test_labels.values()) - set(classes))
    if unseen:
        raise ConfigError([FieldError("test", f"labels {unseen[:5]} never occur in the training TSV")], str(task_file))
    if len(classes) < 2:
        raise ConfigError([FieldError("train", f"one class only ({classes})")], str(task_file))
    index = {c: i for i, c in enumerate(classes)}
    graph, model = load_run_model(run, checkpoint)
    xtr = _pooled(model, graph, list(train_labels), task)
    xte = _pooled(model, graph, list(test_labels), task)
    ytr = torch.tensor([index[v] for v in train_labels.values()])
    yte = torch.tensor([index[v] for v in test_labels.values()])
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp(min=1e-5)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std

    torch.manual_seed(task.seed)
    gen = torch.Generator().manual_seed(task.seed)
    probe = nn.Linear(xtr.shape[-1], len(classes))
    layer_logits = nn.Parameter(torch.zeros(xtr.shape[1] if xtr.dim() == 3 else 1))
    opt = torch.optim.Adam([*probe.parameters(), layer_logits], lr=task.lr, weight_decay=task.weight_decay)

    def logits(x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = (layer_logits.softmax(0)[None, :, None] * x).sum(1)
        return probe(x)

    for _ in range(task.steps):
        idx = torch.randperm(len(ytr), generator=gen)[: task.batch_size]
        loss = F.cross_entropy(logits(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((logits(xte).argmax(-1) == yte).float().mean())
        train_acc = float((logits(xtr).argmax(-1) == ytr).float().mean())
    return {"run": str(run), "task": str(task_file), "features": task.features, "accuracy": acc,
            "chance": float(torch.bincount(yte, minlength=len(classes)).max()) / len(yte),
            "train_accuracy": train_acc, "classes": classes, "n_train": len(ytr), "n_test": len(yte),
            "steps": task.steps, "layer_weights": [round(float(w), 4) for w in layer_logits.detach().softmax(0)]}  # fmt: skip
