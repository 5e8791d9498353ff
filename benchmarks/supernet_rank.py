"""Does a weight-sharing supernet rank candidates like training them does? Measured against the truth table.

Trains the supernet of the truth table's space (``planner supernet train``'s trainer) with the table's own
corpus, teacher and distillation recipe, then scores every candidate of the table that has both truth seeds
done with every scorer, and ranks the scorers against the truth (issue 14, "Measured", item 2):

* the supernet recipe (``WORK/supernet.yaml``): the table's ``distill.yaml`` with ``loss.layers:
  proportional`` (a candidate's one head, on its last layer, onto the teacher's last layer: what the truth
  runs distil), ``supernet: {random, cover, recalibrate}`` (the sandwich rule: largest, smallest and
  ``random`` candidates per step), ``--steps``, seed ``--seed``, every held-out batch (as the truth's
  held-out loss), checkpoints every :data:`CHECKPOINT_EVERY` steps; trained into ``WORK/supernet`` and
  resumed there by running the same command again (its training seconds add up over the sessions,
  ``WORK/supernet-time.json``);
* the candidates: the truth records present when scoring starts (``records.jsonl`` is read once, then; the
  JSON's ``truth`` says how many), those with both seeds, floats and compressed variants; a candidate's truth
  per metric is the mean over the two seeds: the held-out distillation loss (``loss``, lower is better), the
  word probe on the held-out voices (``held``) and on the real recordings (``real``), higher is better;
* the scorers (``supernet_rank_scores.py``): ``supernet`` (the supernet's score of the metric's own kind:
  ``supernet_loss`` for ``loss``, its extracted model's word probe, the truth's probe, on the same set for
  ``held`` and ``real``), the ``distill`` proxy (``proxy``: ``--proxy-steps`` steps, held-out loss over every
  held-out batch), ``tse`` (the sum of that run's training losses), ``naswot``, ``params``, ``macs``,
  ``bops``;
* the statistics (``supernet_rank_report.py``), per group (all, float, compressed, unsealed, sealed) and truth
  metric: Kendall tau-b and Spearman rho with 10,000-resample bootstrap 90% intervals (``tau_supernet``,
  ``tau_proxy``, ``tau_params``, ``tau_naswot``, ... each with ``_ci``), the noise ceiling ``tau_gt_seeds``
  (between the two truth seeds), tau within the parameter quartiles, top-k regret (k = 1, 3, 5), the paired
  difference ``tau_supernet - tau_params`` with its interval, median seconds per candidate
  (``seconds_supernet``, ``seconds_proxy``, ...) and the supernet's training seconds.

Run it (one torch thread; a rerun resumes the training and rescores only candidates it has not scored)::

    python benchmarks/supernet_rank.py --truth benchmarks/results/truth --seed 0 \\
        --json benchmarks/results/supernet-rank-seed0.json          # --work runs/supernet-rank-seed0
    python benchmarks/supernet_rank.py --truth DIR --seed 0 --json x.json --dry   # a few steps: the pipeline

(Run it with the checkout on ``PYTHONPATH`` when the installed planner is another checkout's.) It reads the
table and never writes into it, so it runs beside a ``truth.py`` still generating; ``--seed`` must not be
one of the table's training seeds.

Measured
--------

The figures (two supernet seeds on the complete table, 70 candidates; the scoring settings of
``supernet_choices.py``; the seeds compared by ``supernet_seeds.py``) are in docs/supernet.md, the results in
``benchmarks/results/supernet-rank-seed0.json`` and ``-seed1.json`` (seed 1 with ``--skip probe --skip
proxy``). A work folder's recipe names the table by its absolute path (the supernet's recipe fingerprint
holds it): score a trained supernet with ``--data`` (or ``--truth``, when it is that table) at the folder it
was trained with (a copy of the table there will do); another folder is refused before anything is written.

``--data DIR`` trains and scores the supernet with that table's corpus, teacher and recipe, and ranks against
the records of ``--truth``: a longer table made from the same setup (``truth.py --steps 6000``: the same
corpus hashes, plan and teacher bytes, checked) is scored by an already-trained supernet without
retraining, and the score cache (which depends on the supernet, not on the truth) is reused::

    python benchmarks/supernet_rank.py --data benchmarks/results/truth --truth benchmarks/results/truth-6k \
        --seed 0 --work runs/supernet-rank-seed0 --json supernet-rank-6k-seed0.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from supernet_rank_report import METRICS, SCORERS, analyse, format_report
from supernet_rank_scores import SKIPPABLE, CandidateScorer, write_probe_tasks
from truth_records import read_records
from truth_report import metric_value
from truth_setup import TruthSetup, read_setup, table_space

from planner.errors import ConfigError, FieldError, PlannerError
from planner.files import write_text_atomic
from planner.search import SpaceSampler, load_space
from trainers import dump_recipe, load_recipe
from trainers.data import BatchStream
from trainers.recipe import Recipe
from trainers.supernet import train_supernet

__all__ = ["DRY", "RESULT_TYPE", "SETTINGS", "benchmark", "main", "supernet_recipe", "truth_candidates"]

ROOT = Path(__file__).resolve().parents[1]


def _shown(path: Path) -> str:
    """``path`` as the result records it: relative to the checkout when inside it (results stay portable)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


RESULT_TYPE = "planner-supernet-rank"
SETTINGS = {"steps": 2500, "random": 2, "cover": 256, "recalibrate": 4, "proxy_steps": 20, "proxy_eval_batches": 0}
DRY = {"steps": 4, "random": 1, "cover": 8, "recalibrate": 1, "proxy_steps": 2, "proxy_eval_batches": 2}
CHECKPOINT_EVERY = 100  # supernet steps between checkpoints (about a minute of training: what a kill loses)
LOGGED = 20  # held-out evaluations of the largest candidate over a run (each one pass over the held-out set)


# -- the truth -------------------------------------------------------------------------------------------


def truth_candidates(setup: TruthSetup) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table's candidates with every seed done, as rows (its record fields, ``truth``: the mean over the
    seeds per metric, ``truth_seeds``: the seeds' values), and the counts of what ``records.jsonl`` held when
    read (it is read once, here)."""
    seeds = [int(s) for s in setup.info["training"]["seeds"]]
    records = read_records(setup.out / "records.jsonl")
    plan = json.loads((setup.out / "candidates.json").read_text(encoding="utf-8"))["candidates"]
    runs = {(r["id"], int(r["seed"])): r for r in records}
    rows = []
    for c in plan:  # plan order: floats first, then the variants
        done = [runs.get((c["id"], s)) for s in seeds]
        if any(r is None for r in done):
            continue
        first = done[0]
        if first["arch"] != c["arch"]:
            raise ConfigError([FieldError(f"{c['id']}.arch", "the record's architecture is not the plan's: the "
                                                             "table is inconsistent")], str(setup.out / "records.jsonl"))  # fmt: skip
        values = {m: [metric_value(r, m) for r in done] for m in METRICS}
        rows.append({k: first[k] for k in ("id", "variant", "parent", "arch", "block_name", "quartile", "stratum",
                                           "sealed", "params")}  # fmt: skip
                    | {"truth": {m: float(np.mean(v)) for m, v in values.items()}, "truth_seeds": values,
                       "diverged": [r.get("diverged") for r in done]})  # fmt: skip
    counts = {"read_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "records": len(records), "planned": len(plan),
              "runs_planned": len(plan) * len(seeds), "candidates_complete": len(rows),
              "complete_float": sum(r["variant"] == "float" for r in rows),
              "complete_compressed": sum(r["variant"] != "float" for r in rows),
              "complete_sealed": sum(bool(r["sealed"]) for r in rows), "seeds": seeds}  # fmt: skip
    return rows, counts


def _file_sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def check_same_data(data: TruthSetup, truth: TruthSetup) -> None:
    """Refuses a truth table that was not made from the data table's corpus, teacher, plan and probe: a
    supernet trained on ``data`` is scored against ``truth``'s records only when both tables share them
    (a longer table made with ``truth.py --steps`` shares them; its runs differ in steps and learning rate).

    Raises:
        ConfigError: ``TRUTH/setup.json: FIELD: ...`` naming the first thing that differs.
    """
    if data.out.resolve() == truth.out.resolve():
        return
    d, t = data.info, truth.info
    differ = []
    if d["corpus"]["files"] != t["corpus"]["files"]:
        differ.append(("corpus.files", "its corpus files hash differently"))
    if {k: v for k, v in d["teacher"].items() if k != "train_s"} != {k: v for k, v in t["teacher"].items()
                                                                      if k != "train_s"}:  # fmt: skip
        differ.append(("teacher", "its teacher's settings or accuracies differ"))
    for key in ("weights", "classifier"):
        if _file_sha(data.out / d["teacher"][key]) != _file_sha(truth.out / t["teacher"][key]):
            differ.append((f"teacher.{key}", f"its {t['teacher'][key]} is not the same bytes"))
    if d["plan"] != t["plan"]:
        differ.append(("plan", "its candidates were planned differently"))
    for key in ("probe_steps", "probe_seed"):
        if d["training"].get(key) != t["training"].get(key):
            differ.append((f"training.{key}", f"{t['training'].get(key)} here, {d['training'].get(key)} in --data"))
    if differ:
        raise ConfigError([FieldError(f, f"{why}: the supernet trained on {data.out} cannot be scored against it; "
                                         "give --data and --truth tables made from one setup")
                           for f, why in differ], str(truth.out / "setup.json"))  # fmt: skip


# -- the supernet ----------------------------------------------------------------------------------------


def _held_out_batches(setup: TruthSetup, graph: Any) -> int:
    """The held-out manifest's batches in one epoch (the truth's held-out loss reads every one)."""
    d = setup.recipe.data
    stream = BatchStream([setup.recipe.resolve(d.valid)], sample_rate=d.sample_rate, batch_seconds=d.batch_seconds,
                         max_seconds=d.max_seconds, min_seconds=d.min_seconds, seed=0, spec=graph.spec.input)  # fmt: skip
    return len(stream.epoch_batches(0))


def supernet_recipe(setup: TruthSetup, path: Path, *, seed: int, steps: int, random: int, cover: int,
                    recalibrate: int, valid_batches: int, partition: str | None = None) -> Recipe:  # fmt: skip
    """Writes the supernet's recipe (the module docstring) to ``path``, with absolute paths into the table,
    and loads it."""
    base = setup.recipe
    data = dump_recipe(base)
    data["data"]["train"] = [base.resolve(p) for p in data["data"]["train"]]
    data["data"]["valid"] = base.resolve(data["data"]["valid"])
    data["data"]["valid_batches"] = valid_batches
    for key in ("arch", "checkpoint"):
        if isinstance(data["teacher"].get(key), str):
            data["teacher"][key] = base.resolve(data["teacher"][key])
    data["loss"]["layers"] = "proportional"
    data["supernet"] = {"random": random, "cover": cover, "recalibrate": recalibrate}
    if partition is not None:  # absent otherwise: the recipes of earlier runs stay the same text
        data["supernet"]["partition"] = partition
    data.update(steps=steps, seed=seed, logging={"every": max(1, steps // LOGGED)},
                checkpoint={"every": min(CHECKPOINT_EVERY, steps), "keep": 2})  # fmt: skip
    head = (f"# the supernet of the rank benchmark (benchmarks/supernet_rank.py): {base.source} with one head on\n"
            "# the last layer onto the teacher's last (loss.layers: proportional), the sandwich rule, and its own\n"
            "# steps and seed\n")  # fmt: skip
    text = head + yaml.safe_dump(data, sort_keys=False)
    trained = path.parent / "supernet" / "supernet.json"
    if path.is_file() and trained.is_file() and path.read_text(encoding="utf-8") != text:
        # the run's recipe names the table where it was trained (absolute paths, as its fingerprint holds them)
        raise ConfigError([FieldError("--data", f"the supernet in {trained.parent} was trained with the recipe "
                                                f"{path}, whose paths differ from this table's ({setup.out}): give "
                                                "--data (--truth when it is the same table) the folder it names, "
                                                "or another --work")], str(path))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return load_recipe(path)


def _timed_training(sampler: SpaceSampler, recipe: Recipe, work: Path, space: Path, log: Any) -> dict[str, Any]:
    """Trains (or resumes) the supernet into ``work/supernet``; the seconds of every session so far."""
    time_path = work / "supernet-time.json"
    sessions = json.loads(time_path.read_text())["sessions"] if time_path.is_file() else []
    now: dict[str, Any] = {"from_step": None, "to_step": None, "seconds": 0.0, "started": time.strftime("%FT%T")}
    t0 = time.perf_counter()

    def save() -> None:
        write_text_atomic(time_path, json.dumps({"sessions": [*sessions, now]}, indent=1) + "\n")

    def on_step(step: int, _: dict[str, Any]) -> None:
        if now["from_step"] is None:
            now["from_step"] = step - 1
        now["to_step"], now["seconds"] = step, round(time.perf_counter() - t0, 2)
        if step % 10 == 0:
            save()

    result = train_supernet(sampler, recipe, work / "supernet", space_text=space.read_text(encoding="utf-8"),
                            name=space.stem, log=log, on_step=on_step)  # fmt: skip
    if now["from_step"] is not None:  # this session trained: it counts
        now["seconds"] = round(time.perf_counter() - t0, 2)
        sessions.append(now)
        write_text_atomic(time_path, json.dumps({"sessions": sessions}, indent=1) + "\n")
    trained = sum(s["to_step"] - s["from_step"] for s in sessions)
    seconds = sum(s["seconds"] for s in sessions)
    return {"folder": _shown(work / "supernet"), "steps": recipe.steps, "step": result.step, "cover": len(sampler.cover),
            "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / trained, 3) if trained else None,
            "sessions": sessions}  # fmt: skip


def _git() -> dict[str, Any]:
    """This checkout's commit, and whether tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


# -- the benchmark ---------------------------------------------------------------------------------------


def benchmark(truth: str | os.PathLike[str], seed: int, work: str | os.PathLike[str], settings: dict[str, Any], *,
              data: str | os.PathLike[str] | None = None, train_only: bool = False, resamples: int | None = None,
              skip: frozenset[str] = frozenset(), log: Any = None) -> dict[str, Any]:  # fmt: skip
    """Trains the supernet, scores the truth candidates and ranks the scorers (the module docstring).

    Args:
        truth: the truth table's folder (read, never written): the records the scorers are ranked against.
        data: the table whose corpus, teacher and recipe the supernet is trained and scored with (default
            ``truth``); another table must share them (:func:`check_same_data`), so one trained supernet
            scores a longer table made from the same setup.
        seed: the supernet's training seed and the proxy's.
        work: the working folder (the supernet run, the probe tasks, the score cache).
        settings: :data:`SETTINGS`' keys (``proxy_eval_batches`` 0: every held-out batch).
        train_only: stop once the supernet is trained.
        resamples: bootstrap resamples (default ``ranking.RESAMPLES``).
        skip: scorers left out (``supernet_rank_scores.SKIPPABLE``).
        log: progress lines (None: silent).

    Raises:
        ConfigError: a table is not readable or its space is not this checkout's; the seed is a truth seed; the
            two tables do not share their setup.
    """
    t_start = time.perf_counter()
    truth_setup = read_setup(truth)
    setup = truth_setup if data is None else read_setup(data)
    check_same_data(setup, truth_setup)
    for s in (setup, truth_setup):
        if seed in s.info["training"]["seeds"]:
            raise ConfigError([FieldError("--seed", f"{seed} is one of the truth runs' seeds "
                                                    f"{s.info['training']['seeds']}: pick another")], str(s.out))  # fmt: skip
    space_path = table_space(setup)
    work = Path(work)
    space = load_space(space_path)
    try:
        sampler = SpaceSampler(space, samples=settings["cover"], seed=seed, partition=settings.get("partition"))
    except ConfigError as err:  # supernet.partition: given here as --partition
        raise ConfigError([FieldError("--partition", e.message) for e in err.errors], str(space_path)) from None
    work.mkdir(parents=True, exist_ok=True)
    held = _held_out_batches(setup, sampler.largest())
    recipe = supernet_recipe(setup, work / "supernet.yaml", seed=seed, steps=settings["steps"],
                             random=settings["random"], cover=settings["cover"], recalibrate=settings["recalibrate"],
                             valid_batches=held, partition=settings.get("partition"))  # fmt: skip
    tasks = write_probe_tasks(setup, work / "probe")
    if log is not None:
        parts = f", extremes of each {sampler.partition} ({len(sampler.parts())} parts)" if sampler.partition else ""
        print(f"supernet of {space_path.name}: {len(sampler.cover)} cover candidates{parts}, {settings['steps']} "
              f"steps, seed {seed}, into {work / 'supernet'}", file=log, flush=True)  # fmt: skip
    trained = _timed_training(sampler, recipe, work, space_path, log)
    result: dict[str, Any] = {"type": RESULT_TYPE, "format": 1, "truth_dir": _shown(truth_setup.out),
                              "data_dir": _shown(setup.out), "seed": seed,
                              "settings": settings, "skipped": sorted(skip), "threads": torch.get_num_threads(), "git": _git(),
                              "torch": torch.__version__, "supernet": trained}  # fmt: skip
    if train_only:
        return result

    rows, counts = truth_candidates(truth_setup)  # the records present now
    result["truth"] = counts | {"teacher": truth_setup.info["teacher"], "training": truth_setup.info["training"]}
    if log is not None:
        print(f"scoring {len(rows)} candidates with both seeds done ({counts['records']} records of "
              f"{counts['runs_planned']} planned, read {counts['read_at']})", file=log, flush=True)  # fmt: skip
    scorer = CandidateScorer(setup, recipe, work / "supernet", tasks, seed=seed, proxy_steps=settings["proxy_steps"],
                             proxy_eval_batches=settings["proxy_eval_batches"] or held, cache=work / "scores.jsonl", skip=skip)  # fmt: skip
    for k, row in enumerate(rows, start=1):
        row.update(scorer.score(row))
        if log is not None:
            s, t = row["scores"], row["seconds"]
            print(f"  {k}/{len(rows)} {row['id']} ({row['stratum']}{', sealed' if row['sealed'] else ''}): truth loss "
                  f"{row['truth']['loss']:.4f} held {row['truth']['held']:.3f}; supernet loss {s['supernet_loss']:.4f} "
                  f"probe {s.get('supernet_probe')} ({t.get('supernet', t['supernet_loss']):.1f} s), proxy "
                  f"{s.get('proxy')} ({t.get('proxy', math.nan):.1f} s){' (cached)' if row['cached'] else ''}",
                  file=log, flush=True)  # fmt: skip
    scorers = [s for s in SCORERS if s == "supernet" or any(r["scores"].get(s) is not None for r in rows)]
    kw = {} if resamples is None else {"resamples": resamples}
    groups = analyse(rows, scorers, **kw)
    result.update(scorers=scorers, groups=groups, **{k: v for k, v in groups["all"].items() if k.startswith("seconds_")},
                  seconds_supernet_training=trained["train_seconds"],
                  candidates=[{k: v for k, v in r.items() if k != "arch"} for r in rows],
                  total_s=round(time.perf_counter() - t_start, 1))  # fmt: skip
    sup, proxy = result.get("seconds_supernet"), result.get("seconds_proxy")
    result["proxy_over_supernet"] = proxy / sup if sup and proxy else None
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="the truth table's folder (benchmarks/truth.py --out)")
    ap.add_argument(
        "--data",
        help="the table the supernet is trained on, when not --truth: one made from the "
        "same setup (corpus, teacher, plan), e.g. the shorter table of a trained supernet",
    )
    ap.add_argument("--seed", type=int, required=True, help="the supernet's seed (not a truth seed)")
    ap.add_argument("--json", required=True, help="write the result here")
    ap.add_argument("--work", help="the working folder (default runs/supernet-rank-seed<S>); rerun to resume")
    for name, default in SETTINGS.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int,
                        help=f"default {default}{' (every held-out batch)' if name == 'proxy_eval_batches' else ''}")  # fmt: skip
    ap.add_argument(
        "--partition",
        help="train the largest and smallest of each value of this choice of the space "
        "every step (supernet.partition, e.g. block); default: the space's own",
    )
    ap.add_argument("--dry", action="store_true", help=f"a few steps of everything: {DRY} (given options win)")
    ap.add_argument(
        "--skip",
        action="append",
        choices=sorted(SKIPPABLE),
        default=[],
        help="leave a scorer out (repeatable): probe (the supernet's probes), proxy (the proxy and TSE)",
    )
    ap.add_argument("--train-only", action="store_true", help="train (or resume) the supernet and stop")
    ap.add_argument("--resamples", type=int, help="bootstrap resamples (default 10,000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: repeatable runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {**SETTINGS, **(DRY if args.dry else {})}
    settings.update({k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    bad = [k for k, v in settings.items() if v < (0 if k == "proxy_eval_batches" else 1) and k != "random"]
    if args.partition is not None:  # a setting only when given: earlier results hold none
        settings["partition"] = args.partition
    if bad or settings["random"] < 0:
        ap.error(f"--{(bad or ['random'])[0].replace('_', '-')} must be positive")
    work = args.work or str(ROOT / "runs" / f"supernet-rank-seed{args.seed}")
    try:
        result = benchmark(args.truth, args.seed, work, settings, data=args.data, train_only=args.train_only,
                           resamples=args.resamples, skip=frozenset(args.skip), log=sys.stderr)  # fmt: skip
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.json, json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    s = result["supernet"]
    print(f"supernet: {s['step']} steps, {s['train_seconds']} s of training ({s['seconds_per_step']} s/step), "
          f"{s['cover']} cover candidates")  # fmt: skip
    if "groups" in result:
        t = result["truth"]
        print(f"truth: {t['candidates_complete']} candidates with both seeds ({t['complete_float']} float, "
              f"{t['complete_compressed']} compressed, {t['complete_sealed']} sealed) of {t['planned']}; "
              f"{t['records']} records read at {t['read_at']}")  # fmt: skip
        print(format_report(result["groups"], result["scorers"]))
        ratio = result["proxy_over_supernet"]
        shown = {k: result.get(f"seconds_{k}") for k in ("supernet", "supernet_loss", "proxy")}
        times = ", ".join(f"{k} {v:.2f}" for k, v in shown.items() if v is not None)
        print(f"seconds per candidate: {times}{f' (proxy: {ratio:.1f}x the supernet)' if ratio else ''}; "
              f"total {result['total_s']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
