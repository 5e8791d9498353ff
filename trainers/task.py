"""Task losses for fine-tuning (QAT, N:M): CTC over characters, or cross-entropy over class labels.

* ``ctc``: the architecture's ``ctc`` head gives ``(B, T, vocab)`` logits; transcripts are lower-cased
  and mapped through ``loss.alphabet`` (blank 0, ``alphabet[i]`` -> ``i + 1``); ``vocab`` must be
  ``len(alphabet) + 1``. ``torch.nn.functional.ctc_loss`` with mean reduction over target lengths.
* ``classification``: a ``Linear(width, classes)`` owned by the trainer (:class:`TaskModel` holds it next
  to the encoder, so it is optimised and checkpointed with it) on the encoder output mean-pooled over
  each utterance's valid frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from trainers.data import Batch, DataError, read_labels, read_manifest
from trainers.losses import LossResult
from trainers.recipe import Recipe

__all__ = ["TaskLoss", "TaskModel", "mean_pool", "read_task_labels"]


def mean_pool(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the valid frames: ``(B, T, D)``, ``(B,)`` -> ``(B, D)``."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return (x * valid[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)


class TaskModel(nn.Module):
    """The encoder (``student``) and the trainer's classifier, optimised and checkpointed together.

    ``forward`` runs the encoder; ``mask_schedule`` is the encoder's (None when it is not compressed).
    """

    def __init__(self, student: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.classifier = classifier

    def forward(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None):  # noqa: ANN201
        return self.student(x, lengths, mask=mask)


def read_task_labels(recipe: Recipe) -> dict[str, str]:
    """``{normalised absolute path: label}`` of ``data.labels``; relative paths join the first manifest's root."""
    path = recipe.resolve(recipe.data.labels)
    assert path is not None
    root = read_manifest(recipe.resolve(recipe.data.train[0])).root
    try:
        labels = read_labels(path, root)
    except OSError as err:
        raise ConfigError([FieldError("data.labels", f"{path}: cannot read ({err.strerror})")]) from None
    return {os.path.normpath(k): v for k, v in labels.items()}


class TaskLoss:
    """The recipe's task loss for a batch: ``loss(module, batch, step) -> LossResult``.

    Raises:
        ConfigError: a ``ctc`` loss on an architecture without a fitting ``ctc`` head, or a label
            outside ``loss.classes`` / ``loss.alphabet``.
    """

    def __init__(self, graph: EncoderGraph, recipe: Recipe, labels: Mapping[str, str]) -> None:
        self.kind = recipe.loss.kind
        self.labels = dict(labels)
        cfg = recipe.loss
        if self.kind == "ctc":
            heads = [n for n in graph.nodes("heads") if n.kind == "ctc"]
            if not heads:
                raise ConfigError([FieldError("loss.kind", f"ctc needs a ctc head; {graph.name} has none")])
            vocab = heads[0].config.vocab
            if vocab != len(cfg.alphabet) + 1:
                raise ConfigError([FieldError("loss.alphabet", f"{len(cfg.alphabet)} characters + blank != the ctc head's "
                                                               f"vocab {vocab} in {graph.name}")])  # fmt: skip
            self.index = {c: i + 1 for i, c in enumerate(cfg.alphabet)}
            for path, text in self.labels.items():
                bad = sorted({c for c in text.lower() if c not in self.index})
                if bad:
                    raise ConfigError([FieldError("data.labels", f"{path}: characters {bad} are not in loss.alphabet")])
        else:
            self.classes = list(cfg.classes) if cfg.classes is not None else sorted(set(self.labels.values()))
            unknown = sorted(set(self.labels.values()) - set(self.classes))
            if unknown:
                raise ConfigError([FieldError("loss.classes", f"labels {unknown[:5]} are not among {self.classes}")])
            if len(self.classes) < 2:
                raise ConfigError([FieldError("data.labels", f"one class only ({self.classes}); a classifier needs two")])
            self.index = {c: i for i, c in enumerate(self.classes)}

    def make_classifier(self, width: int) -> nn.Module | None:
        """The trainer's ``Linear(width, classes)`` (None for CTC)."""
        return nn.Linear(width, len(self.classes)) if self.kind == "classification" else None

    def _label(self, path: str) -> str:
        try:
            return self.labels[os.path.normpath(path)]
        except KeyError:
            raise DataError(f"{path}: no label in data.labels") from None

    def __call__(self, module: nn.Module, batch: Batch, step: int) -> LossResult:
        x, xl = (batch.features, batch.feature_lengths) if batch.features is not None else (batch.waveforms, batch.lengths)
        x = x.to(next(module.parameters()).dtype)
        out = module(x, xl)
        if self.kind == "ctc":
            targets = [torch.tensor([self.index[c] for c in self._label(p).lower()], dtype=torch.long) for p in batch.paths]
            logp = out.logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
            total = F.ctc_loss(logp, torch.cat(targets), out.lengths, torch.tensor([t.numel() for t in targets]),
                               blank=0, zero_infinity=True)  # fmt: skip
            return LossResult(total)
        y = torch.tensor([self.index[self._label(p)] for p in batch.paths], dtype=torch.long)
        logits = module.classifier(mean_pool(out.output, out.lengths))
        total = F.cross_entropy(logits.float(), y)
        return LossResult(total, accuracy=float((logits.argmax(-1) == y).float().mean()))
