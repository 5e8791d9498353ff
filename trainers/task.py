"""Task losses for fine-tuning (QAT, N:M): CTC over characters, or cross-entropy over class labels, alone
or with layer-to-layer distillation added.

* ``ctc``: the architecture's ``ctc`` head gives ``(B, T, vocab)`` logits; transcripts are lower-cased
  and mapped through ``loss.alphabet`` (blank 0, ``alphabet[i]`` -> ``i + 1``); ``vocab`` must be
  ``len(alphabet) + 1``. ``torch.nn.functional.ctc_loss`` with mean reduction over target lengths. The
  batch's greedy paths ride along (:class:`~trainers.ctc.BatchDecoding`) so logged steps report a CER.
* ``classification``: a ``Linear(width, classes)`` owned by the trainer (:class:`TaskModel` holds it next
  to the encoder, so it is optimised and checkpointed with it) on the encoder output mean-pooled over
  each utterance's valid frames.
* ``distill_weight``: :class:`TaskDistillLoss`, ``task + distill_weight * distillation``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from planner.nn.model import EncoderOutput
from trainers.ctc import BatchDecoding, encode
from trainers.data import Batch, DataError, read_labels, read_manifest
from trainers.distill import Distiller
from trainers.losses import LossResult
from trainers.recipe import Recipe

__all__ = ["TaskDistillLoss", "TaskLoss", "TaskModel", "mean_pool", "read_task_labels"]


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
        raise ConfigError([FieldError("data.labels", f"{path}: cannot read ({err.strerror})")], recipe.source) from None
    return {os.path.normpath(k): v for k, v in labels.items()}


class TaskLoss:
    """The recipe's task loss for a batch: ``task_loss(module, batch, step) -> LossResult``.

    :meth:`forward` and :meth:`loss` are the two halves of a call, for :class:`TaskDistillLoss` to share
    the forward with the distillation.

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
                raise ConfigError(
                    [FieldError("loss.kind", f"ctc needs a ctc head; {graph.name} has none")], recipe.source
                )
            vocab = heads[0].config.vocab
            if vocab != len(cfg.alphabet) + 1:
                raise ConfigError([FieldError("loss.alphabet", f"{len(cfg.alphabet)} characters + blank != the ctc head's "
                                                               f"vocab {vocab} in {graph.name}")], recipe.source)  # fmt: skip
            self.alphabet = cfg.alphabet
            self.targets: dict[str, list[int]] = {}
            for path, text in self.labels.items():
                try:
                    self.targets[path] = encode(text, cfg.alphabet)
                except ValueError as err:
                    raise ConfigError(
                        [FieldError("data.labels", f"{path}: {err} (loss.alphabet)")], recipe.source
                    ) from None
        else:
            self.classes = list(cfg.classes) if cfg.classes is not None else sorted(set(self.labels.values()))
            unknown = sorted(set(self.labels.values()) - set(self.classes))
            if unknown:
                raise ConfigError(
                    [FieldError("loss.classes", f"labels {unknown[:5]} are not among {self.classes}")], recipe.source
                )
            if len(self.classes) < 2:
                raise ConfigError(
                    [FieldError("data.labels", f"one class only ({self.classes}); a classifier needs two")],
                    recipe.source,
                )
            self.index = {c: i for i, c in enumerate(self.classes)}

    def make_classifier(self, width: int) -> nn.Module | None:
        """The trainer's ``Linear(width, classes)`` (None for CTC)."""
        return nn.Linear(width, len(self.classes)) if self.kind == "classification" else None

    def _key(self, path: str) -> str:
        key = os.path.normpath(path)
        if key not in self.labels:
            raise DataError(f"{path}: no label in data.labels")
        return key

    @staticmethod
    def forward(module: nn.Module, batch: Batch) -> EncoderOutput:
        """The student's forward on the batch's unmasked input (waveform or filterbanks)."""
        x, xl = batch.model_input
        return module(x.to(next(module.parameters()).dtype), xl)

    def loss(self, module: nn.Module, out: EncoderOutput, batch: Batch) -> LossResult:
        """The task loss of ``batch`` from the student's output ``out`` (``module`` holds the classifier)."""
        if self.kind == "ctc":
            targets = [self.targets[self._key(p)] for p in batch.paths]
            flat = torch.tensor([c for t in targets for c in t], dtype=torch.long, device=out.logits.device)
            target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long, device=out.logits.device)
            logp = out.logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
            total = F.ctc_loss(logp, flat, out.lengths, target_lengths, blank=0, zero_infinity=True)
            decoding = BatchDecoding(out.logits.detach().argmax(-1), out.lengths.detach(),
                                     tuple(self.labels[self._key(p)] for p in batch.paths), self.alphabet)  # fmt: skip
            return LossResult(total, decoding=decoding)
        logits = module.classifier(mean_pool(out.output, out.lengths))
        y = torch.tensor([self.index[self.labels[self._key(p)]] for p in batch.paths], dtype=torch.long,
                         device=logits.device)  # fmt: skip
        total = F.cross_entropy(logits.float(), y)
        return LossResult(total, accuracy=float((logits.argmax(-1) == y).float().mean()))

    def __call__(self, module: nn.Module, batch: Batch, step: int) -> LossResult:
        return self.loss(module, self.forward(module, batch), batch)


class TaskDistillLoss:
    """A task loss plus weighted layer-to-layer distillation: ``task + distill_weight * distill``.

    How many student forwards: without masking, one. The unmasked output serves both parts, so the task
    and the distillation see the same forward (the same dropout draw), as one objective should. With
    masking, two: the task loss on the unmasked forward, the distillation on a forward with the step's
    span mask (:class:`~trainers.distill.Distiller` exactly as alone). Masking distillation hides about
    half of the frames; a CTC or classification loss on that input would train the student for heavily
    corrupted audio rather than for the clean input it is deployed on, and the task gradient should be the
    one of the clean objective.

    Args:
        task: the task loss.
        distiller: the distillation loss (its teacher frozen; nothing of it is checkpointed).
        weight: ``loss.distill_weight``.
    """

    def __init__(self, task: TaskLoss, distiller: Distiller, weight: float) -> None:
        if not (math.isfinite(weight) and weight >= 0):  # NaN fails it; a NaN weight would train a NaN model
            raise ConfigError([FieldError("loss.distill_weight", f"{weight!r} is not a weight (allowed: a finite "
                                                                 "number, 0 or more)")])  # fmt: skip
        self.task, self.distiller, self.weight = task, distiller, weight

    def held_out(self, index: int) -> contextlib.AbstractContextManager[None]:
        """The distillation's fixed masks of held-out batch ``index`` (:meth:`~trainers.distill.Distiller.held_out`)."""
        return self.distiller.held_out(index)

    def place(self, device: torch.device, shard: tuple[int, int]) -> None:
        """The teacher onto the engine's device, the masks' shard (:meth:`~trainers.distill.Distiller.place`)."""
        self.distiller.place(device, shard)

    def __call__(self, module: nn.Module, batch: Batch, step: int) -> LossResult:
        out = self.task.forward(module, batch)
        task = self.task.loss(module, out, batch)
        shared = out if self.distiller.masking is None else None
        dist = self.distiller(module, batch, step, clean_output=shared)
        total = task.total + self.weight * dist.total
        return LossResult(total, dist.masked, dist.unmasked, dist.per_layer, accuracy=task.accuracy,
                          task=float(task.total.detach()), distill=float(dist.total.detach()),
                          decoding=task.decoding)  # fmt: skip
