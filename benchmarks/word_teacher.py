"""The teacher of the ranking benchmarks (proxy_rank.py, truth.py): a small planner architecture trained to
classify the corpus's words with ``trainers.train``, as a user would (``planner train teacher.yaml --recipe``).

:data:`TEACHER` is 64 wide, 3 Transformer layers, 20 ms frames (conv strides 5 x 4 x 4 x 4, the students' frame
rate), with a mask embedding so that it can serve masking distillation. Its word classifier is the trainer's
(cross-entropy on the mean-pooled output); :func:`classifier_accuracy` scores it on held-out utterances.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

import planner
from planner.ir.graph import EncoderGraph
from trainers import load_recipe, train
from trainers.task import mean_pool
from trainers.train import TrainResult

__all__ = ["TEACHER", "classifier_accuracy", "train_teacher"]

TEACHER = """format: 1
name: proxy-teacher
input: {kind: waveform, sample_rate: 16000}
width: 64
frontend:
  - {kind: conv_extractor, conv_layers: [[32, 10, 5], [32, 4, 4], [32, 4, 4], [32, 4, 4]], output_norm: true, projection: true}
  - {kind: mask_embedding}
  - {kind: conv_pos_embedding, kernel: 8, groups: 4}
  - {kind: layer_norm}
layers:
  - {kind: transformer, repeat: 3, heads: 4, ffn: 128}
"""


def train_teacher(folder: Path, data: str, steps: int, *, seed: int = 0, log: Any = None,
                  run: str = "teacher") -> tuple[EncoderGraph, TrainResult]:  # fmt: skip
    """Writes ``teacher.yaml`` and ``teacher-recipe.yaml`` into ``folder`` and trains the word classifier.

    Args:
        folder: where the two files go; the run folder is ``folder / run``.
        data: the recipe's ``data:`` flow mapping with ``labels`` (and ``valid_labels``) set, paths relative
            to ``folder``.
        steps: classification steps (AdamW, lr 2e-3, 10% warmup, linear decay).
        seed: the recipe's seed.
        log: where the trainer's progress lines go (None: silent).
        run: the run folder's name under ``folder``.
    """
    (folder / "teacher.yaml").write_text(TEACHER, encoding="utf-8")
    (folder / "teacher-recipe.yaml").write_text(
        f"data: {data}\nloss: {{kind: classification}}\noptimizer: {{lr: 2.0e-3}}\n"
        f"schedule: {{warmup_ratio: 0.1}}\nsteps: {steps}\nlogging: {{every: {max(1, steps // 10)}}}\n"
        f"checkpoint: {{every: {steps}, keep: 1}}\nseed: {seed}\n", encoding="utf-8")  # fmt: skip
    graph = planner.load(folder / "teacher.yaml")
    return graph, train(graph, load_recipe(folder / "teacher-recipe.yaml"), folder / run, log=log)


def classifier_accuracy(graph: EncoderGraph, weights: Path, classifier: Path, rows: Sequence[tuple[str, str]],
                        folder: Path, classes: Sequence[str]) -> float:  # fmt: skip
    """The teacher (state dict ``weights``) with its own classifier (``classifier``) on ``rows``' files in
    ``folder``, one at a time: the fraction labelled right."""
    model = planner.materialize(graph)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    state = torch.load(classifier, weights_only=True)
    clf = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    clf.load_state_dict(state)
    correct = 0
    with torch.no_grad():
        for name, label in rows:
            wav = torch.from_numpy(sf.read(folder / name, dtype="float32")[0])[None]
            out = model(wav, torch.tensor([wav.shape[1]]))
            correct += classes[int(clf(mean_pool(out.output, out.lengths)).argmax())] == label
    return correct / len(rows)
