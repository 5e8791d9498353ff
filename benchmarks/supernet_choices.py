"""What the supernet scorer's own settings cost in ranking and buy in time: a design-choice table.

Given a supernet the rank benchmark trained (``supernet_rank.py --work WORK``: ``WORK/supernet.yaml`` and
``WORK/supernet/``) and the truth table it was scored against, this scores the table's **unsealed**
candidates (the sealed 25% is never looked at while choosing a setting; ``--sealed`` scores those instead,
once a setting has been chosen) under each scoring setting, side by side in one run:

* ``recalibrate`` R: training batches that re-estimate a candidate's batch norm before scoring (OFA), from
  :data:`RECALIBRATE`; 0 leaves the fresh statistics of an extracted model (mean 0, variance 1);
* ``batches`` N: held-out batches of ``supernet_loss`` (:data:`BATCHES`, and every batch of the held-out
  set): one pass over every batch per candidate and R gives the loss and the seconds of each batch, so every
  N is read from the same pass (the first N batches, as ``evaluator: {kind: supernet, batches: N}`` takes).

* ``refine`` S (a top-K warm-start re-rank, measured on every candidate): the extracted candidate, with the
  default recalibration, fine-tuned ``--refine-steps`` (:data:`REFINE_STEPS`) steps from its inherited weights with the
  supernet's own distillation recipe (AdamW at :data:`REFINE_LR`, 10% warmup then linear decay, the same
  training batches for every candidate), then scored as the default setting is; the loss after half the
  steps is kept too.

For each setting it reports Kendall tau-b against the mean-of-seeds truth (the held-out distillation loss
``loss`` and the word probe on held-out voices ``held``) with a 10,000-resample bootstrap 90% interval, the
paired difference to the default setting (the supernet's R, every batch) and to ``params``, and the median
seconds per candidate: extraction, recalibration and the first N batches (the teacher's outputs are computed
once, by the first candidate, and are not counted). The ``distill`` proxy (the rank benchmark's settings) is
timed on ``--proxy`` of the same candidates in the same run, so ``proxy_over_supernet`` is a ratio of two
medians measured side by side.

    python benchmarks/supernet_choices.py --truth benchmarks/results/truth --work runs/supernet-rank-seed0 \\
        --json benchmarks/results/supernet-choices-seed0.json

(Run it with the checkout on ``PYTHONPATH`` when the installed planner is another checkout's.) It reads the
table and the supernet and writes only ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ranking import RESAMPLES, bootstrap_tau_ci, bootstrap_tau_diff_ci, kendall_tau
from supernet_rank import SETTINGS, _git, _json_safe, _shown, truth_candidates
from truth import run_recipe
from truth_setup import read_setup

import planner
from planner.errors import ConfigError, FieldError, NonFiniteError, PlannerError
from planner.files import write_text_atomic
from trainers import distill_proxy, load_recipe
from trainers.distill import Distiller
from trainers.engine import TorchEngine
from trainers.supernet import SupernetScorer
from trainers.supernet.sandwich import _SharedTeacher
from trainers.train import build_stream

__all__ = ["BATCHES", "RECALIBRATE", "REFINE_LR", "REFINE_STEPS", "RESULT_TYPE", "choices", "main"]

RESULT_TYPE = "planner-supernet-choices"
RECALIBRATE = (0, 1, 2, 4, 8)
REFINE_STEPS = 100  # fine-tuning steps of the warm-start re-rank (about 10 s per candidate here)
REFINE_LR = 2.0e-4  # a tenth of the supernet's: a fine-tune from trained weights, as recipes/qat.yaml's
BATCHES = (1, 2, 4, 8)  # and every held-out batch
TRUTH = {"loss": -1.0, "held": 1.0}  # truth metric -> the sign that makes higher better


def _time_pass(scorer: SupernetScorer, graph: Any, recalibrate: int) -> dict[str, Any]:
    """One scoring pass of ``graph`` over every held-out batch: the seconds of extraction with ``recalibrate``
    batches of batch-norm recalibration, and each batch's loss, utterances and seconds."""
    scorer.recalibrate = recalibrate
    torch.manual_seed(0)  # recalibration runs in training mode: the same random state for every setting
    t0 = time.perf_counter()
    model = scorer.extract(graph)
    out: dict[str, Any] = {"fixed": time.perf_counter() - t0, "losses": [], "sizes": [], "seconds": []}
    t = time.perf_counter()
    for loss, size in scorer.held_out_terms(model, graph, batches=scorer.valid_batches):
        out["seconds"].append(time.perf_counter() - t)
        out["losses"].append(loss)
        out["sizes"].append(size)
        t = time.perf_counter()
    return out


def _refine(scorer: SupernetScorer, graph: Any, recipe: Any, batches: list[Any], teacher: Any) -> dict[str, Any]:
    """The warm-start re-rank of ``graph``: its inherited weights fine-tuned on ``batches`` (one step each) and
    scored on every held-out batch after half of them and after all; ``seconds_S``: extraction, S steps and
    one scoring pass (the other pass not counted)."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = scorer.extract(graph)
    rec = dataclasses.replace(recipe, steps=len(batches), optimizer=dataclasses.replace(recipe.optimizer, lr=REFINE_LR))
    engine = TorchEngine(model, rec)
    distiller = Distiller(graph, teacher, rec)
    out: dict[str, Any] = {}
    scoring = 0.0
    for step, batch in enumerate(batches):
        engine.step(lambda m, b=batch, i=step: distiller(m, b, i).total)
        if step + 1 in (max(1, len(batches) // 2), len(batches)):
            t = time.perf_counter()
            model.eval()
            out[f"loss_{step + 1}"] = scorer.held_out_loss(model, graph)
            model.train()
            out[f"seconds_{step + 1}"] = time.perf_counter() - t0 - scoring
            scoring += time.perf_counter() - t
    return out


def _loss(p: dict[str, Any], n: int) -> float:
    sizes = p["sizes"][:n]
    return float(sum(v * s for v, s in zip(p["losses"][:n], sizes)) / sum(sizes))


def _tau(scores: np.ndarray, truth: np.ndarray, resamples: int) -> dict[str, Any]:
    lo, hi = bootstrap_tau_ci(scores, truth, resamples=resamples)
    return {"tau": float(kendall_tau(scores, truth)), "tau_ci": [lo, hi]}


def choices(truth: str | os.PathLike[str], work: str | os.PathLike[str], *, sealed: bool = False, proxy: int = 5,
            refine: int = REFINE_STEPS,
            proxy_steps: int = SETTINGS["proxy_steps"], resamples: int = RESAMPLES, log: Any = None) -> dict[str, Any]:  # fmt: skip
    """The design-choice table (the module docstring) as a JSON-ready dict.

    Raises:
        ConfigError: the work folder holds no trained supernet, or the table no complete unsealed candidate.
    """
    t_start = time.perf_counter()
    setup = read_setup(truth)
    work = Path(work)
    recipe_path = work / "supernet.yaml"
    if not recipe_path.is_file() or not (work / "supernet" / "supernet.json").is_file():
        raise ConfigError([FieldError("--work", "holds no trained supernet: run supernet_rank.py --work "
                                                f"{work} first")], str(work))  # fmt: skip
    recipe = load_recipe(recipe_path)
    rows, counts = truth_candidates(setup)
    rows = [r for r in rows if bool(r["sealed"]) == sealed]
    if len(rows) < 3:
        raise ConfigError([FieldError("records", f"holds {len(rows)} complete {'sealed' if sealed else 'unsealed'} candidates: a ranking "
                                                 "needs at least 3")], str(setup.out / "records.jsonl"))  # fmt: skip
    scorer = SupernetScorer(work / "supernet", recipe)
    default_r = int(scorer.recalibrate)
    graphs = [planner.loads(r["arch"], f"truth candidate {r['id']}") for r in rows]
    scorer.calibration_batches(graphs[0], max(*RECALIBRATE, default_r))  # drawn once, untimed
    scorer.held_out_loss(scorer.extract(graphs[0]), graphs[0])  # the teacher's held-out outputs: once, untimed
    total = scorer.valid_batches
    batches = sorted({*(b for b in BATCHES if b < total), total})
    passes: dict[int, list[dict[str, Any]]] = {}
    for r_ in sorted({*RECALIBRATE, default_r}):
        passes[r_] = [_time_pass(scorer, g, r_) for g in graphs]
        if log is not None:
            print(f"  recalibrate {r_}: {len(graphs)} candidates scored", file=log, flush=True)
    refined = []
    if refine:
        stream = build_stream(graphs[0], recipe)
        train_batches = [next(stream) for _ in range(refine)]
        teacher = _SharedTeacher(scorer._teacher.inner, keep=True)  # the same batches for all: one teacher pass
        scorer.recalibrate = default_r
        for k, g in enumerate(graphs):
            refined.append(_refine(scorer, g, recipe, train_batches, teacher))
            if log is not None and (k + 1) % 10 == 0:
                print(f"  refine: {k + 1}/{len(graphs)} candidates", file=log, flush=True)
    truths = {m: np.array([sign * r["truth"][m] for r in rows]) for m, sign in TRUTH.items()}
    params = np.array([float(r["params"]) for r in rows])  # more parameters: predicted better (supernet_rank's)
    default = np.array([-_loss(p, total) for p in passes[default_r]])
    table = []
    for r_, ps in passes.items():
        for n in batches:
            scores = np.array([-_loss(p, n) for p in ps])
            seconds = [p["fixed"] + sum(p["seconds"][:n]) for p in ps]
            entry: dict[str, Any] = {"recalibrate": r_, "batches": n, "refine": 0, "seconds": float(np.median(seconds))}
            for m, t in truths.items():
                ok = np.isfinite(t) & np.isfinite(scores)
                entry[m] = _tau(scores[ok], t[ok], resamples)
                entry[m]["minus_default_ci"] = list(bootstrap_tau_diff_ci(scores[ok], default[ok], t[ok],
                                                                          resamples=resamples))  # fmt: skip
                entry[m]["minus_params_ci"] = list(bootstrap_tau_diff_ci(scores[ok], params[ok], t[ok],
                                                                         resamples=resamples))  # fmt: skip
            table.append(entry)
    for steps in sorted({max(1, refine // 2), refine}) if refined else ():
        scores = np.array([-r[f"loss_{steps}"] for r in refined])
        seconds = [r[f"seconds_{steps}"] for r in refined]
        entry = {"recalibrate": default_r, "batches": total, "refine": steps, "seconds": float(np.median(seconds))}
        for m, t in truths.items():
            ok = np.isfinite(t) & np.isfinite(scores)
            entry[m] = _tau(scores[ok], t[ok], resamples)
            entry[m]["minus_default_ci"] = list(
                bootstrap_tau_diff_ci(scores[ok], default[ok], t[ok], resamples=resamples)
            )
            entry[m]["minus_params_ci"] = list(
                bootstrap_tau_diff_ci(scores[ok], params[ok], t[ok], resamples=resamples)
            )
        table.append(entry)
    params_tau = {m: _tau(params[np.isfinite(t)], t[np.isfinite(t)], resamples) for m, t in truths.items()}
    proxy_s = []
    s = setup.info["training"]
    steps = proxy_steps  # the rank benchmark's proxy: its steps, every held-out batch
    proxy_diverged = 0
    for g in graphs[:proxy]:
        rec = run_recipe(setup.recipe, g, setup.teacher.num_layers, seed=int(recipe.seed), steps=steps, lr=s["lr"])
        t0 = time.perf_counter()
        try:  # the proxy run to its end (its one evaluation included): only its time is wanted here
            list(distill_proxy(g, rec, steps, eval_every=steps, eval_batches=total, teacher=setup.teacher))
        except NonFiniteError:  # a diverged run took its time all the same
            proxy_diverged += 1
        proxy_s.append(time.perf_counter() - t0)
    proxy_med = float(np.median(proxy_s)) if proxy_s else None
    for e in table:
        e["proxy_over_supernet"] = proxy_med / e["seconds"] if proxy_med else None
    return {"type": RESULT_TYPE, "format": 1, "truth_dir": _shown(setup.out), "work": _shown(work),
            "supernet_seed": int(recipe.seed), "group": "sealed" if sealed else "unsealed", "truth": counts,
            "candidates": [r["id"] for r in rows], "held_out_batches": total,
            "default": {"recalibrate": default_r, "batches": total}, "params": params_tau, "table": table,
            "refine": {"steps": refine, "lr": REFINE_LR}, "seconds_proxy": proxy_med,
            "proxy_candidates": len(proxy_s), "proxy_steps": proxy_steps,
            "proxy_diverged": proxy_diverged,
            "threads": torch.get_num_threads(), "git": _git(), "torch": torch.__version__,
            "total_s": round(time.perf_counter() - t_start, 1)}  # fmt: skip


def _fmt(c: dict[str, Any]) -> str:
    lo, hi = c["tau_ci"]
    return f"{c['tau']:.2f} [{lo:.2f}, {hi:.2f}]"


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{len(result['candidates'])} {result['group']} candidates, supernet seed {result['supernet_seed']}; "
             f"default R={result['default']['recalibrate']}, N={result['default']['batches']}",
             "| R | N | refine | tau vs loss | tau vs held probe | minus default (held) | s/cand | proxy / this |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for e in result["table"]:
        lo, hi = e["held"]["minus_default_ci"]
        ratio = e["proxy_over_supernet"]
        lines.append(f"| {e['recalibrate']} | {e['batches']} | {e['refine']} | {_fmt(e['loss'])} | {_fmt(e['held'])} | "
                     f"[{lo:.2f}, {hi:.2f}] | {e['seconds']:.2f} | {'-' if ratio is None else f'{ratio:.1f}x'} |")  # fmt: skip
    p = result["params"]
    proxy = result["seconds_proxy"]
    timed = f"{proxy:.2f} s per candidate (median of {result['proxy_candidates']})" if proxy else "not timed"
    lines.append(f"params: {_fmt(p['loss'])} (loss), {_fmt(p['held'])} (held); proxy {timed}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="the truth table's folder")
    ap.add_argument("--work", required=True, help="the rank benchmark's work folder (its trained supernet)")
    ap.add_argument("--json", required=True, help="write the result here")
    ap.add_argument(
        "--sealed",
        action="store_true",
        help="score the sealed candidates instead: once, after a setting has been chosen on the others",
    )
    ap.add_argument("--proxy", type=int, default=5, help="candidates the distill proxy is timed on (default 5)")
    ap.add_argument(
        "--proxy-steps",
        type=int,
        default=SETTINGS["proxy_steps"],
        help=f"its steps (default {SETTINGS['proxy_steps']}, the rank benchmark's)",
    )
    ap.add_argument("--refine-steps", type=int, default=REFINE_STEPS,
                    help=f"steps of the warm-start re-rank (default {REFINE_STEPS}; 0: leave it out)")  # fmt: skip
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default 10,000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    if args.proxy < 0 or args.refine_steps < 0 or args.proxy_steps < 1 or args.resamples < 1:
        ap.error("--proxy and --refine-steps must be >= 0, --proxy-steps and --resamples >= 1")
    torch.set_num_threads(args.threads)
    try:
        result = choices(
            args.truth,
            args.work,
            sealed=args.sealed,
            proxy=args.proxy,
            proxy_steps=args.proxy_steps,
            refine=args.refine_steps,
            resamples=args.resamples,
            log=sys.stderr,
        )
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.json, json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    print(format_table(result))
    return 0 if all(math.isfinite(e["seconds"]) for e in result["table"]) else 1


if __name__ == "__main__":
    sys.exit(main())
