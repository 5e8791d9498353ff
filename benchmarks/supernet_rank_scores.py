"""Every scorer of the rank benchmark (supernet_rank.py) on one truth candidate, and the cache of their scores.

:class:`CandidateScorer` scores a candidate (its architecture from the truth record) with

* ``supernet_loss``: the trained supernet's held-out distillation loss of the candidate's extracted model
  (:class:`trainers.supernet.SupernetScorer`: extraction, batch-norm recalibration, the recipe's fixed
  held-out masks over every held-out batch);
* ``supernet_probe`` / ``supernet_probe_real``: the truth table's word probe on that model's frozen features
  (the task file :func:`write_probe_tasks` writes: the table's training TSV, ``features: last``, the
  table's probe steps and seed), scored on the held-out voices and, with the same trained probe, on the
  real recordings; exactly what ``SupernetScorer.score`` computes from the task file, plus the second set;
* ``proxy`` and ``tse``: one run of the ``distill`` proxy (:func:`trainers.distill_proxy`, the table's
  recipe with the candidate's head on the teacher's last layer, ``proxy_steps`` steps from the benchmark's
  seed): its held-out loss over ``proxy_eval_batches`` held-out batches, and the sum of its training
  losses (the training-speed estimate of Ru et al., 2021);
* ``naswot``: ``EVALUATORS["naswot"]`` with its defaults, at initialisation;
* ``params``, ``macs``, ``bops``: ``planner.estimate``.

``seconds``: ``supernet`` (extraction to probe, all of it), ``supernet_loss`` (extraction to the held-out
loss), ``proxy`` (the whole proxy run, its evaluation included) and ``naswot``.

Scores are kept in ``scores.jsonl`` of the work folder, one line per candidate, under a fingerprint of
everything they depend on (the supernet's weights, the recipe, the tasks, the seed, the proxy's settings):
a rerun with more truth records scores only the new candidates, and a retrained supernet scores all again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from truth import run_recipe
from truth_setup import TruthSetup

import planner
from planner.errors import NonFiniteError
from planner.files import write_text_atomic
from planner.search import EVALUATORS, NullContext
from trainers import distill_proxy
from trainers.data import read_labels
from trainers.evaluate import classification_probe, load_task
from trainers.recipe import Recipe
from trainers.supernet import SupernetScorer

__all__ = ["SCORE_TYPE", "SKIPPABLE", "CandidateScorer", "read_scores", "write_probe_tasks"]

SCORE_TYPE = "planner-rank-score"
SCORE_FORMAT = 1
SKIPPABLE = frozenset({"probe", "proxy"})


def write_probe_tasks(setup: TruthSetup, folder: Path) -> dict[str, Path | None]:
    """The truth probe as task files in ``folder``: ``held.yaml`` (and ``real.yaml`` with real recordings).

    The table's labels are relative to its manifests' roots and a task's TSV rows to the TSV's folder (and
    may not leave it), so the labelled audio is copied under ``folder/audio/<set>/`` (a few MB) and the
    TSVs list it in the table's order: the probe sees the same files in the same order as the truth runs.

    Returns:
        ``{"held": task file, "real": task file or None}``.
    """
    corpus = setup.out / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    tsv = {}
    for s, labels in setup.labels.items():
        if not labels:
            continue
        rows = []
        for path, word in labels.items():
            rel = Path(os.path.relpath(path, corpus))  # audio/<set>/<name>
            target = folder / rel
            if not target.is_file() or target.read_bytes() != Path(path).read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            rows.append(f"{rel.as_posix()}\t{word}\n")
        tsv[s] = folder / f"{s}.tsv"
        write_text_atomic(tsv[s], "".join(rows))
    t = setup.info["training"]
    tasks: dict[str, Path | None] = {"held": None, "real": None}
    for s in ("held", "real"):
        if s in tsv:
            tasks[s] = folder / f"{s}.yaml"
            write_text_atomic(tasks[s], f"# the truth table's word probe (benchmarks/truth.py), on {s}\nformat: 1\n"
                              f"kind: classification\ntrain: train.tsv\ntest: {s}.tsv\nfeatures: last\n"
                              f"steps: {t['probe_steps']}\nseed: {t['probe_seed']}\n")  # fmt: skip
    return tasks


def _labels(task_file: Path) -> tuple[Any, dict[str, str], dict[str, str]]:
    """A task's settings, training labels and test labels, read as ``planner evaluate`` reads them."""
    task, base = load_task(task_file)
    train, test = base / task.train, base / task.test
    return task, read_labels(train, str(train.parent)), read_labels(test, str(test.parent))


def _clean(value: Any) -> Any:
    """NaN and inf as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]


def read_scores(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``scores.jsonl``'s lines by ``(fingerprint, candidate id, architecture hash)``; a torn last line (a
    killed run) is left out, and so is a line that is not a score (it is scored again)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            r = json.loads(line)
            if r.get("type") == SCORE_TYPE and r.get("format") == SCORE_FORMAT:
                out[(r["fingerprint"], r["id"], r["arch_sha"])] = r
        except (ValueError, KeyError, AttributeError):
            continue
    return out


class CandidateScorer:
    """Scores truth candidates with every scorer (see the module docstring), cached in ``cache``.

    Args:
        setup: the truth table's setup (its teacher, recipe and training settings).
        recipe: the supernet's recipe (what it was trained with).
        supernet: the trained supernet's run folder.
        tasks: :func:`write_probe_tasks`' task files.
        seed: the benchmark's seed (the proxy's runs, the supernet scorer's random state).
        proxy_steps: steps of the proxy run.
        proxy_eval_batches: held-out batches of the proxy's evaluation (the first of the held-out epoch).
        cache: ``scores.jsonl``.
        skip: scorers left out (:data:`SKIPPABLE`: ``probe``, the supernet's probes; ``proxy``, the proxy and
            TSE), for a run that only needs the others (a second supernet seed); they are part of the cache's
            fingerprint, so a full run never takes a reduced run's scores.
    """

    def __init__(self, setup: TruthSetup, recipe: Recipe, supernet: Path, tasks: dict[str, Path | None], *,
                 seed: int, proxy_steps: int, proxy_eval_batches: int, cache: Path,
                 skip: frozenset[str] = frozenset()) -> None:  # fmt: skip
        if not skip <= SKIPPABLE:
            raise ValueError(f"cannot skip {sorted(skip - SKIPPABLE)}: only {sorted(SKIPPABLE)}")
        self.setup, self.seed, self.cache, self.skip = setup, seed, cache, skip
        self.proxy_steps, self.proxy_eval_batches = proxy_steps, proxy_eval_batches
        self.held_task = tasks["held"]
        self.scorer = SupernetScorer(supernet, recipe, task=self.held_task)
        self.task, self.train, self.held = _labels(self.held_task)
        self.real = _labels(tasks["real"])[2] if tasks["real"] is not None else None
        self.classes = sorted(set(self.train.values()))
        weights = (supernet / "supernet.safetensors").read_bytes()
        self.fingerprint = _sha(json.dumps({
            "supernet": _sha(weights), "recipe": recipe.fingerprint(), "seed": seed, "proxy_steps": proxy_steps,
            "proxy_eval_batches": proxy_eval_batches, "distill": _sha(json.dumps(setup.info["training"])),
            "tasks": {k: None if v is None else _sha(v.read_text()) for k, v in tasks.items()},
            "naswot": repr(EVALUATORS["naswot"]()), "format": SCORE_FORMAT,
            **({"skip": sorted(skip)} if skip else {})}, sort_keys=True))  # fmt: skip
        self._done = read_scores(cache)

    def supernet_scores(self, graph: Any) -> tuple[dict[str, float], dict[str, float]]:
        """``supernet_loss``, ``supernet_probe`` and ``supernet_probe_nll`` (the probe's accuracy and cross-entropy;
        ``_real`` too, with real recordings) and their seconds."""
        torch.manual_seed(self.seed)  # batch-norm recalibration runs in training mode: the same state for each
        t0 = time.perf_counter()
        model = self.scorer.extract(graph)
        loss = self.scorer.held_out_loss(model, graph)
        t1 = time.perf_counter()
        if "probe" in self.skip:
            return {"supernet_loss": loss}, {"supernet_loss": t1 - t0}
        also = {"real": self.real} if self.real else None
        res = classification_probe(model, graph, self.task, self.train, self.held, self.classes, also=also)
        scores = {
            "supernet_loss": loss,
            "supernet_probe": float(res["accuracy"]),
            "supernet_probe_nll": float(res["nll"]),
        }
        if also:
            scores["supernet_probe_real"] = float(res["also"]["real"]["accuracy"])
            scores["supernet_probe_real_nll"] = float(res["also"]["real"]["nll"])
        return scores, {"supernet": time.perf_counter() - t0, "supernet_loss": t1 - t0}

    def proxy_scores(self, graph: Any) -> tuple[dict[str, float], dict[str, float]]:
        """``proxy`` (the held-out loss after ``proxy_steps``) and ``tse`` (the sum of the training losses)."""
        s = self.setup.info["training"]
        recipe = run_recipe(self.setup.recipe, graph, self.setup.teacher.num_layers, seed=self.seed,
                            steps=self.proxy_steps, lr=s["lr"])  # fmt: skip
        losses: list[float] = []
        t0 = time.perf_counter()
        try:
            *_, (_, value) = distill_proxy(graph, recipe, self.proxy_steps, eval_every=self.proxy_steps,
                                           eval_batches=self.proxy_eval_batches, teacher=self.setup.teacher,
                                           losses=losses)  # fmt: skip
        except NonFiniteError:  # a diverged proxy run ranks nothing: NaN, which the statistics leave out
            value, losses = math.nan, [math.nan]
        return {"proxy": value, "tse": sum(losses)}, {"proxy": time.perf_counter() - t0}

    def score(self, cand: dict[str, Any]) -> dict[str, Any]:
        """``{"scores": {scorer: value}, "seconds": {scorer: s}, "cached": bool}`` of one truth candidate
        (``id`` and ``arch`` of its record)."""
        arch_sha = _sha(cand["arch"])
        hit = self._done.get((self.fingerprint, cand["id"], arch_sha))
        if hit is not None:
            return {"scores": hit["scores"], "seconds": hit["seconds"], "cached": True}
        graph = planner.loads(cand["arch"], f"truth candidate {cand['id']}")
        scores, seconds = self.supernet_scores(graph)
        if "proxy" not in self.skip:
            more, t = self.proxy_scores(graph)
            scores.update(more)
            seconds.update(t)
        t0 = time.perf_counter()
        scores["naswot"] = EVALUATORS["naswot"]().evaluate(graph, NullContext())["naswot"]
        seconds["naswot"] = time.perf_counter() - t0
        cost = planner.estimate(graph)
        scores.update(params=float(cost.params), macs=float(cost.macs), bops=float(cost.bops))
        line = _clean({"type": SCORE_TYPE, "format": SCORE_FORMAT, "fingerprint": self.fingerprint, "id": cand["id"],
                       "arch_sha": arch_sha, "scores": scores, "seconds": seconds})  # fmt: skip
        with open(self.cache, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._done[(self.fingerprint, cand["id"], arch_sha)] = line
        return {"scores": line["scores"], "seconds": line["seconds"], "cached": False}
