"""The ground-truth table: candidates of a planner space trained standalone with the production recipe, two
seeds each, scored by the held-out distillation loss and by a downstream word probe.

The reference that scorers (the supernet, the distill proxy, NASWOT, params; ``supernet_rank.py``) are ranked
against. Generation takes hours on a CPU: it appends one record per finished run, resumes where it stopped,
and splits into parts that run side by side.

    python benchmarks/truth.py --setup-only                     # corpus, teacher, recipes, plan: once
    python benchmarks/truth.py --part 0/2 --threads 1 &         # two processes share the runs
    python benchmarks/truth.py --part 1/2 --threads 1 &
    python benchmarks/truth.py --report benchmarks/results/truth --json stability.json
    python benchmarks/truth.py --report benchmarks/results/truth-6k --against benchmarks/results/truth

(Run it with the checkout on ``PYTHONPATH`` when the installed planner is another checkout's.)

What a table is (``--out``, default ``benchmarks/results/truth``)
-----------------------------------------------------------------

* Setup (``truth_setup.py``, once, reused on every later call): the espeak-ng corpus of ``proxy_rank.py``
  (20 words; 6 training voices x 2 speeds; 2 held-out voices) and the installed real recordings of the
  digits (asterisk, a second held-out set); the word teacher (``word_teacher.py``) trained with
  ``trainers.train``; ``distill.yaml`` and ``qat.yaml``; ``setup.json`` with every wav's sha256, the
  teacher's accuracies and the settings below. The layout is documented in ``truth_setup.py``.
* Plan (``truth_plan.py``, ``candidates.json``): ``--candidates`` (40) float architectures of ``--space``
  stratified into parameter quartiles x block kind, ``--parents`` (10) of them also as int8, int4 and 2:4
  variants (30), and a sealed 25% (flag ``sealed``: whole candidates with their variants) that no tuning
  of a scorer may look at. ``{"type": "planner-truth-plan", "format": 1, "settings": {...}, "candidates":
  [{"id", "variant", "parent", "values", "block", "block_name", "quartile", "stratum", "sealed", "params",
  "arch"}, ...]}`` in run order.
* Runs, candidate-major (a candidate's seeds one after the other, the floats first, then the variants);
  ``--part i/n`` takes every n-th of them. A float run: masking distillation (prob 0.5, span 3) of the
  candidate's one projection head (its last layer) onto the teacher's last layer, AdamW lr 2e-3, 10%
  warmup then linear decay, ``--steps`` (2000) batches of 4 s, through ``trainers.distill.Distiller`` and
  ``trainers.engine.TorchEngine``; its final weights go to ``weights/<id>-s<seed>.pt`` (not committed). A
  variant run starts from its parent's float weights of the same seed (trained on the spot when missing)
  and fine-tunes ``--qat-steps`` (400) with the same loss, the architecture's quantizers / 2:4 masks active
  (few-shot masks, frozen after half the steps) at lr 2e-4, as ``recipes/qat.yaml`` drives compression.
* Held-out curve: at step 0, every ``--eval-every`` (250) steps, at T/2, 3T/4 and T, the mean loss per
  utterance over the whole held-out manifest (fixed batches), each batch under
  ``Distiller.held_out(i)``: fixed masks at the run's final probability, drawn from the recipe of seed 0,
  so every run (both seeds too) is scored on the same masks.
* Probe: the trained student, frozen, in eval mode (compression active): a linear word classifier on its
  mean-pooled last-layer features (``trainers.evaluate.classification_probe``, 300 Adam steps, seed 0),
  trained on the training utterances, scored on the held-out voices and on the real recordings.

``records.jsonl`` (``truth_records.py``: flock, fsync, torn last line dropped): one JSON object per line per
(candidate, seed)::

    {"type": "planner-truth-record", "format": 1, "id": "c07" | "c07-int8", "variant": "float" | "int8" |
     "int4" | "2:4", "parent": null | "c07", "values": {domain: value}, "arch": "<planner.dumps YAML>",
     "block": 0 | 1 | 2, "block_name", "quartile": 0-3, "stratum": "q3-transformer-local", "sealed": bool,
     "seed": 101, "steps": T, "init": null | "weights/c07-s101.pt", "curve": [[step, loss], ...],
     "loss": the final held-out loss, "probe": {"held_out", "real", "train", "held_out_chance",
     "real_chance", "held_out_nll", "real_nll"} (accuracies and the probe's cross-entropies, the latter
     since 1 December 2026; "real" null without recordings), "params", "macs", "bops",
     "storage_bytes", "seconds": {"total", "train", "eval", "probe"}, "diverged": null | the step,
     "git": {"commit", "dirty"}, "torch": version, "threads": N}

A diverged run (non-finite loss or gradient) keeps its curve so far, ``loss`` and ``probe`` null.
``--report`` prints the table's own stability (``truth_report.py``) and ``--json`` writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from truth_plan import Candidate, plan_candidates
from truth_records import append_record, read_records, run_key
from truth_report import between_tables, format_stability, stability
from truth_setup import TruthSetup, ensure_setup

import planner
from planner.compress import load_checkpoint_
from planner.errors import ConfigError, FieldError, NonFiniteError, PlannerError
from planner.files import write_bytes_atomic, write_text_atomic
from trainers import dump_recipe, recipe_from_dict
from trainers.data import Batch, BatchStream
from trainers.distill import Distiller
from trainers.engine import TorchEngine
from trainers.evaluate import ProbeTask, classification_probe
from trainers.recipe import Recipe

__all__ = ["EVAL_SEED", "PLAN", "TRAINING", "Table", "eval_steps", "held_out_batches", "held_out_loss", "main",
           "open_table", "probe_run", "report", "run_recipe", "train_run", "write_plan"]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "searchspaces" / "supernet-small.yaml"
OUT = ROOT / "benchmarks" / "results" / "truth"
PLAN_TYPE = "planner-truth-plan"
EVAL_SEED = 0  # the held-out masks' recipe seed: the same masks for every run
HELD_OUT_SEED = 0  # the held-out batches' order and crops: the same batches for every run

TRAINING = {"steps": 2000, "qat_steps": 400, "eval_every": 250, "seeds": [101, 102], "lr": 2.0e-3, "qat_lr": 2.0e-4,
            "probe_steps": 300, "probe_seed": 0}  # fmt: skip
PLAN = {"candidates": 40, "parents": 10, "sealed": 0.25, "seed": 0}


# -- one run ---------------------------------------------------------------------------------------------


def eval_steps(steps: int, every: int) -> list[int]:
    """The curve's steps: 0, every ``every``, T/2, 3T/4 and T (the report reads the last three)."""
    return sorted({0, steps // 2, 3 * steps // 4, steps, *range(every, steps + 1, every)})


def run_recipe(base: Recipe, graph: Any, teacher_layers: int, *, seed: int, steps: int, lr: float,
               compression: dict[str, Any] | None = None) -> Recipe:  # fmt: skip
    """``base`` for one run: the candidate's last projection head onto the teacher's last layer (weight 1)."""
    heads = [n for n in graph.nodes("heads") if n.kind == "projection_heads"]
    if not heads:
        raise ConfigError([FieldError("heads", "a truth candidate needs a projection_heads head")], graph.name)
    data = dump_recipe(base)
    data["loss"]["layers"] = {max(heads[0].config.layer_indices(len(graph.nodes("layers")))): teacher_layers - 1}
    data["loss"]["weights"] = [1.0]
    data.update(seed=seed, steps=steps, compression=compression)
    data["optimizer"]["lr"] = lr
    return recipe_from_dict(data, f"{base.source} (seed {seed}, {steps} steps)", base.base_dir)


def _stream(setup: TruthSetup, recipe: Recipe, graph: Any, manifests: list[str], seed: int,
            batch_seconds: float | None = None) -> BatchStream:  # fmt: skip
    d = recipe.data
    batch_seconds = d.batch_seconds if batch_seconds is None else batch_seconds
    return BatchStream([recipe.resolve(m) for m in manifests], sample_rate=d.sample_rate, batch_seconds=batch_seconds,
                       max_seconds=d.max_seconds, min_seconds=d.min_seconds, seed=seed, spec=graph.spec.input)  # fmt: skip


def held_out_batches(setup: TruthSetup, recipe: Recipe, graph: Any) -> list[Batch]:
    """Every batch of the held-out manifest's first epoch, in the fixed order of :data:`HELD_OUT_SEED`."""
    stream = _stream(setup, recipe, graph, [recipe.data.valid], HELD_OUT_SEED)
    return [next(stream) for _ in range(len(stream.epoch_batches(0)))]


def held_out_loss(student: torch.nn.Module, evaluator: Distiller, batches: list[Batch]) -> float:
    """The mean loss per utterance over ``batches`` in eval mode, batch ``i`` under ``evaluator.held_out(i)``;
    the global random state is put back, so evaluating does not change training."""
    state = torch.get_rng_state()
    student.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                with evaluator.held_out(i):
                    total += float(evaluator(student, batch, 0).total) * batch.size
                n += batch.size
    finally:
        student.train()
        torch.set_rng_state(state)
    return total / n


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def probe_run(setup: TruthSetup, student: torch.nn.Module, graph: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The record's ``probe``: a linear word probe on the frozen ``student``'s mean-pooled last-layer features
    (put in eval mode), trained on the training utterances, scored on the held-out voices and the real
    recordings (module docstring)."""
    student.eval()
    labels = setup.labels
    task = ProbeTask(train="corpus/labels.tsv", test="corpus/valid-labels.tsv", features="last",
                     steps=settings["probe_steps"], seed=settings["probe_seed"])  # fmt: skip
    also = {"real": labels["real"]} if labels["real"] else None
    res = classification_probe(student, graph, task, labels["train"], labels["held"], setup.classes, also=also)
    real = res["also"]["real"] if also else None
    return {"held_out": res["accuracy"], "real": real["accuracy"] if real else None, "train": res["train_accuracy"],
            "held_out_chance": res["chance"], "real_chance": real["chance"] if real else None,
            "held_out_nll": _finite(res["nll"]), "real_nll": _finite(real["nll"]) if real else None}  # fmt: skip


def train_run(setup: TruthSetup, cand: Candidate, seed: int, settings: dict[str, Any],
              init: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, Any], torch.nn.Module]:  # fmt: skip
    """Trains one candidate for one seed and probes it; returns the record's run fields and the student.

    A float starts from its initialisation (``torch.manual_seed(seed)``); a variant from ``init`` (the
    parent's float state dict) with its compression driven as in ``settings`` (see the module docstring).
    ``settings["batch_seconds"]``, when there (``truth_pilot.py``'s), replaces the recipe's training batch;
    the held-out batches are always the table's.
    """
    t0 = time.perf_counter()
    variant = cand.variant != "float"
    steps = settings["qat_steps"] if variant else settings["steps"]
    compression = {"schedule": "few_shot", "steps": max(1, steps // 2)} if variant else None
    lr = settings["qat_lr"] if variant else settings["lr"]
    layers = setup.teacher.num_layers
    recipe = run_recipe(setup.recipe, cand.graph, layers, seed=seed, steps=steps, lr=lr, compression=compression)
    eval_recipe = run_recipe(setup.recipe, cand.graph, layers, seed=EVAL_SEED, steps=steps, lr=lr)
    torch.manual_seed(seed)
    student = planner.materialize(cand.graph)
    if init is not None:
        load_checkpoint_(student, init)
    schedule = getattr(student, "mask_schedule", None)
    if schedule is not None and recipe.compression is not None:
        schedule.config = recipe.compression.sparsity_schedule()
    distiller = Distiller(cand.graph, setup.teacher, recipe)
    evaluator = Distiller(cand.graph, setup.teacher, eval_recipe)
    # a pilot's larger training batches (truth_pilot.py --batch-seconds); the held-out batches stay the table's
    train_stream = _stream(setup, recipe, cand.graph, list(recipe.data.train), seed, settings.get("batch_seconds"))
    held = held_out_batches(setup, recipe, cand.graph)
    engine = TorchEngine(student, recipe)
    at = set(eval_steps(steps, settings["eval_every"]))
    eval_s = 0.0

    def evaluate(step: int) -> None:
        nonlocal eval_s
        t = time.perf_counter()
        curve.append([step, _finite(held_out_loss(student, evaluator, held))])
        eval_s += time.perf_counter() - t

    curve: list[list[Any]] = []
    evaluate(0)
    diverged = None
    for step in range(1, steps + 1):
        batch = next(train_stream)
        holder: dict[str, torch.Tensor] = {}

        def loss_fn(module: torch.nn.Module, batch: Batch = batch, step: int = step,
                    holder: dict[str, torch.Tensor] = holder) -> torch.Tensor:  # fmt: skip
            holder["loss"] = distiller(module, batch, step - 1).total
            return holder["loss"]

        try:
            engine.step(loss_fn)
        except NonFiniteError:
            diverged = step
            break
        if not math.isfinite(float(holder["loss"].detach())):
            diverged = step
            break
        if schedule is not None:  # the mask clock: few-shot masks freeze after the recipe's steps
            schedule.step()
        if step in at:
            evaluate(step)
            if curve[-1][1] is None:
                diverged = step
                break
    train_s = time.perf_counter() - t0 - eval_s
    t1 = time.perf_counter()
    probe = probe_run(setup, student, cand.graph, settings) if diverged is None else None
    probe_s = time.perf_counter() - t1
    cost = planner.estimate(cand.graph)
    fields = {"steps": steps, "curve": curve, "loss": curve[-1][1] if diverged is None else None, "probe": probe,
              "params": cost.params, "macs": cost.macs, "bops": cost.bops, "storage_bytes": cost.storage_bytes,
              "seconds": {"total": round(time.perf_counter() - t0, 2), "train": round(train_s, 2),
                          "eval": round(eval_s, 2), "probe": round(probe_s, 2)},
              "diverged": diverged}  # fmt: skip
    return fields, student


# -- the table -------------------------------------------------------------------------------------------


def _git() -> dict[str, Any]:
    """The checkout's commit, and whether tracked files differ from it (untracked outputs do not count)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def _weights_path(out: Path, cand_id: str, seed: int) -> Path:
    return out / "weights" / f"{cand_id}-s{seed}.pt"


class Table:
    """A table's folder: its setup, plan and records; runs its candidates (see the module docstring)."""

    def __init__(self, setup: TruthSetup, plan: list[Candidate], log: Any = None) -> None:
        self.setup, self.plan, self.log = setup, plan, log
        self.out = setup.out
        self.records = self.out / "records.jsonl"
        self.settings = setup.info["training"]
        self.by_id = {c.id: c for c in plan}
        self.git = _git()

    def runs(self, part: tuple[int, int] = (0, 1)) -> list[tuple[Candidate, int]]:
        """Every run in order (candidate-major), or part ``i`` of ``n``: every n-th from the i-th."""
        everything = [(c, s) for c in self.plan for s in self.settings["seeds"]]
        i, n = part
        return everything[i::n]

    def done(self) -> set[tuple[str, int]]:
        return {run_key(r) for r in read_records(self.records)}

    def _say(self, text: str) -> None:
        if self.log is not None:
            print(text, file=self.log, flush=True)

    def run_one(self, cand: Candidate, seed: int) -> dict[str, Any]:
        """Trains and records one run (a variant's parent first, when its weights are missing)."""
        init, init_path = None, None
        if cand.parent is not None:
            path = _weights_path(self.out, cand.parent, seed)
            if not path.is_file():
                self._say(f"  {cand.id} s{seed}: its parent's weights are missing; training {cand.parent} s{seed}")
                self.run_one(self.by_id[cand.parent], seed)
            init_path = path.relative_to(self.out).as_posix()
            init = torch.load(path, weights_only=True) if path.is_file() else None
        if cand.parent is not None and init is None:  # the parent diverged: nothing to fine-tune
            fields: dict[str, Any] = {"steps": self.settings["qat_steps"], "curve": [], "loss": None, "probe": None,
                                      "diverged": "parent"}  # fmt: skip
        else:
            fields, student = train_run(self.setup, cand, seed, self.settings, init)
            if cand.parent is None and fields["diverged"] is None:
                buf = io.BytesIO()
                torch.save(student.state_dict(), buf)
                write_bytes_atomic(_weights_path(self.out, cand.id, seed), buf.getvalue())
        summary = cand.summary()
        record = {"id": cand.id, "variant": cand.variant, "parent": cand.parent, "values": cand.values,
                  "arch": summary["arch"], "block": cand.block, "block_name": summary["block_name"],
                  "quartile": cand.quartile, "stratum": cand.stratum, "sealed": cand.sealed, "seed": seed,
                  "init": init_path, **fields, "git": self.git, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}  # fmt: skip
        append_record(self.records, record)
        return record

    def generate(self, part: tuple[int, int] = (0, 1)) -> int:
        """Runs this part's runs that no record holds yet (checked before each); returns how many it ran."""
        todo = self.runs(part)
        ran = 0
        for k, (cand, seed) in enumerate(todo, start=1):
            if (cand.id, seed) in self.done():  # another part, or an earlier call, did it
                continue
            r = self.run_one(cand, seed)
            ran += 1
            p = r["probe"] or {}
            loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
            self._say(f"[part {part[0]}/{part[1]}] {k}/{len(todo)} {cand.id} s{seed} ({cand.stratum}"
                      f"{', sealed' if cand.sealed else ''}): loss {loss}, probe held {p.get('held_out')} real "
                      f"{p.get('real')}, {r.get('seconds', {}).get('total')} s")  # fmt: skip
        return ran


def _space_entry(space: Path) -> dict[str, Any]:
    try:
        text = space.read_bytes()
    except OSError as err:
        raise ConfigError([FieldError("--space", f"cannot read ({err.strerror})")], str(space)) from None
    rel = os.path.relpath(space.resolve(), ROOT)
    return {"space": rel if not rel.startswith("..") else str(space.resolve()),
            "space_sha256": hashlib.sha256(text).hexdigest()}  # fmt: skip


def write_plan(out: Path, plan: list[Candidate], settings: dict[str, Any]) -> None:
    """Writes ``candidates.json``, or checks that the one there is this plan.

    Raises:
        ConfigError: ``candidates.json: candidates: ...`` when the drawn plan differs from the saved one.
    """
    data = {"type": PLAN_TYPE, "format": 1, "settings": settings, "candidates": [c.summary() for c in plan]}
    path = out / "candidates.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("candidates") != data["candidates"]:
            raise ConfigError([FieldError("candidates", "the plan drawn now differs from this saved one (the space "
                                                        "or truth_plan.py changed): restore them, or use another --out")],
                              str(path))  # fmt: skip
        return
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def open_table(out: str | os.PathLike[str], *, corpus: str | None = None, teacher_steps: int | None = None,
               space: str | os.PathLike[str] | None = None, training: dict[str, Any] | None = None,
               plan: dict[str, Any] | None = None, synthetic_utterances: int = 48, log: Any = None) -> Table:  # fmt: skip
    """Opens (making the setup and plan first if needed) the table in ``out``.

    Settings left None take the table's saved ones, else the defaults (:data:`TRAINING`, :data:`PLAN`, the
    espeak corpus, a 1000-step teacher, :data:`SPACE`); one given that differs from the saved table's is an
    error.

    Raises:
        ConfigError: ``setup.json: field: ...`` / ``candidates.json: ...``: settings, corpus or plan differ.
    """
    out = Path(out)
    saved: dict[str, Any] = {}
    if (out / "setup.json").is_file():
        try:
            saved = json.loads((out / "setup.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}  # ensure_setup reports it
    given_training = {k: v for k, v in (training or {}).items() if v is not None}
    settings = {**TRAINING, **saved.get("training", {}), **given_training}
    plan_given = {k: v for k, v in (plan or {}).items() if v is not None}
    space_path = Path(space) if space is not None else (ROOT / saved["plan"]["space"] if "plan" in saved else SPACE)
    plan_settings = {**PLAN, **{k: v for k, v in saved.get("plan", {}).items() if k in PLAN}, **plan_given,
                     **_space_entry(space_path)}  # fmt: skip
    kind = corpus or saved.get("corpus", {}).get("kind", "espeak")
    if teacher_steps is not None and saved and saved.get("teacher", {}).get("steps") != teacher_steps:
        raise ConfigError([FieldError("teacher.steps", f"the table's teacher had {saved['teacher'].get('steps')} steps, "
                                                       f"this call asks for {teacher_steps}: leave --teacher-steps out, "
                                                       "or use another --out")], str(out / "setup.json"))  # fmt: skip
    setup = ensure_setup(out, corpus=kind, teacher_steps=teacher_steps or 1000, settings=settings, plan=plan_settings,
                         synthetic_utterances=synthetic_utterances, log=log)  # fmt: skip
    p = setup.info["plan"]
    candidates = plan_candidates(space_path, p["candidates"], p["parents"], p["sealed"], p["seed"])
    write_plan(out, candidates, p)
    return Table(setup, candidates, log)


def _read_table(out: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    try:
        plan = json.loads((out / "candidates.json").read_text(encoding="utf-8"))
        info = json.loads((out / "setup.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            [FieldError("", f"not a truth table ({err}); make one with --setup-only")], str(out)
        ) from None
    return plan, info, read_records(out / "records.jsonl")


def report(out: str | os.PathLike[str], against: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The stability report of the table in ``out`` (``truth_report.stability``) with its folder and counts;
    with ``against``, also tau between the two tables (``truth_report.between_tables``).

    Raises:
        ConfigError: ``candidates.json`` or ``setup.json`` is missing or unreadable, or a record line is broken;
            ``against`` has another plan, other seeds, or another architecture under a candidate's id.
    """
    out = Path(out)
    plan, info, records = _read_table(out)
    result = stability(records, plan["candidates"], info["training"]["seeds"])
    report = {"type": "planner-truth-report", "format": 1, "out": str(out), "teacher": info["teacher"], **result}
    if against is not None:
        other = Path(against)
        o_plan, o_info, o_records = _read_table(other)
        for field, mine, theirs in [("plan", info["plan"], o_info["plan"]),
                                    ("training.seeds", info["training"]["seeds"], o_info["training"]["seeds"])]:  # fmt: skip
            if mine != theirs:
                raise ConfigError([FieldError(field, f"{theirs} there, {mine} in {out}: compare tables of one plan "
                                                     "and seeds")], str(other / "setup.json"))  # fmt: skip
        arch = {c["id"]: c["arch"] for c in plan["candidates"]}
        wrong = sorted({r["id"] for r in o_records if arch.get(r["id"]) != r["arch"]})
        if wrong:
            raise ConfigError([FieldError("records", f"{', '.join(wrong[:5])}: another architecture than {out}'s "
                                                     "plan under the same id")], str(other / "records.jsonl"))  # fmt: skip
        groups = between_tables(records, o_records, plan["candidates"], info["training"]["seeds"])
        report["against"] = {"out": str(other), "steps": [info["training"]["steps"], o_info["training"]["steps"]],
                             "groups": groups}  # fmt: skip
    return report


# -- command line ----------------------------------------------------------------------------------------


def _part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not i/n (e.g. 0/2)") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= i < n")
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT), help="the table's folder")
    ap.add_argument("--report", metavar="OUT_DIR", help="print the stability report of this table and stop")
    ap.add_argument("--json", help="with --report: also write it here")
    ap.add_argument("--against", metavar="OTHER_DIR", help="with --report: also tau between the two tables (one plan)")
    ap.add_argument("--setup-only", action="store_true", help="make the setup and the plan, run nothing")
    ap.add_argument("--part", type=_part, default=(0, 1), help="i/n: run every n-th run from the i-th")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: repeatable runs)")
    ap.add_argument("--corpus", choices=("espeak", "synthetic"), help="a new table's corpus (default espeak)")
    ap.add_argument("--teacher-steps", type=int, help="a new table's teacher steps (default 1000)")
    ap.add_argument("--space", help=f"a new table's space (default {SPACE.relative_to(ROOT)})")
    for name, default in TRAINING.items():
        flag = "--" + name.replace("_", "-")
        if name == "seeds":
            ap.add_argument(flag, type=int, nargs="+", help=f"training seeds (default {default})")
        else:
            ap.add_argument(flag, type=type(default), help=f"default {default}")
    for name, default in PLAN.items():
        ap.add_argument("--" + ("plan-seed" if name == "seed" else name), dest=f"plan_{name}", type=type(default),
                        help=f"a new table's plan: {name} (default {default})")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        if args.report:
            result = report(args.report, args.against)
            print(format_stability(result))
            if args.json:
                write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
            return 0
        torch.set_num_threads(args.threads)
        training = {k: getattr(args, k) for k in TRAINING}
        plan = {k: getattr(args, f"plan_{k}") for k in PLAN}
        table = open_table(args.out, corpus=args.corpus, teacher_steps=args.teacher_steps, space=args.space,
                           training=training, plan=plan, log=sys.stderr)  # fmt: skip
        t = table.setup.info["teacher"]
        print(f"{table.out}: {len(table.plan)} candidates, {len(table.runs())} runs ({len(table.done())} done); "
              f"teacher {t['steps']} steps, held-out accuracy {t['held_out_accuracy']}, real {t['real_accuracy']}",
              file=sys.stderr)  # fmt: skip
        if args.setup_only:
            return 0
        ran = table.generate(args.part)
        print(f"part {args.part[0]}/{args.part[1]}: ran {ran} runs; {len(table.done())} of {len(table.runs())} done",
              file=sys.stderr)  # fmt: skip
        return 0
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
