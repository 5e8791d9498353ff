"""Does the short distillation proxy rank candidates like a run 10 times longer? Kendall's tau, measured.

1. Corpus. ``--corpus espeak`` (the default when espeak-ng is installed): words spoken by espeak-ng (the ten
   digits and ten command words), training voices x speeds for training, two other voices for the held-out
   manifest. ``--corpus synthetic``: chirps in frequency bands (the band is the label), for machines
   without espeak-ng and for the tests.
2. Teacher. A small planner architecture (:data:`word_teacher.TEACHER`: 64 wide, 3 Transformer layers, 20 ms frames)
   trained with ``trainers.train`` to classify the words (cross-entropy of the trainer's classifier on the
   mean-pooled output); its held-out accuracy on the unseen voices is reported. The distillation recipe
   names it as users would: ``teacher: {kind: architecture, arch: teacher.yaml, checkpoint:
   teacher/student.pt}``, loaded once with :func:`trainers.teacher.load_teacher`.
3. Candidates. ``--candidates`` distinct architectures sampled from ``--space`` with the planner's own
   sampler (:func:`planner.search.sample_space`, ``--seed``). Each has one projection head on its last
   layer, distilled onto the teacher's last layer (``loss.layers``, set per candidate), so every candidate
   learns the same target and the held-out losses compare across depths.
4. Runs. Each candidate is distilled with :func:`trainers.distill_proxy` (masking distillation, one
   held-out evaluation at the end over the whole held-out manifest) for every ``--proxy-steps`` N and for
   10 N steps; the same training batches and masks for every candidate.

Prints one table (and ``--json`` writes it): per proxy length, Kendall's tau-b and Spearman's rho between the
N-step and the 10N-step held-out losses, and the median seconds per candidate of each; then two free
baselines against the longest run: the parameter count (more is better) and NASWOT at initialisation.

    python benchmarks/proxy_rank.py                       # espeak corpus, 10 candidates, N = 5 and 20
    python benchmarks/proxy_rank.py --corpus synthetic --candidates 8 --proxy-steps 5

Measured (2-core machine shared with other jobs, 1 thread; 240 training utterances, 220 s, 6 voices x 2
speeds x 20 words; 80 held out, 72 s, 2 other voices; teacher 300 steps in 14 s, held-out accuracy 0.66
against a chance of 0.05). Tau / Spearman; seconds per candidate (median) for the proxy and the reference:

| candidates (seed) | 5 vs 50 steps | 20 vs 200 steps | 5 vs 200 | params vs 200 | NASWOT vs 200 | wall |
| --- | --- | --- | --- | --- | --- | --- |
| 10 (0) | 0.51 / 0.75; 0.87 s, 3.4 s | 0.47 / 0.61; 1.6 s, 12.9 s | 0.20 / 0.37 | 0.58 / 0.80 | 0.73 / 0.87 | 212 s |
| 10 (1) | 0.47 / 0.67; 0.85 s, 2.9 s | 0.38 / 0.52; 1.6 s, 10.4 s | 0.56 / 0.71 | 0.42 / 0.56 | 0.42 / 0.54 | 193 s |
| 20 (2) | 0.41 / 0.54; 0.76 s, 3.0 s | 0.05 / 0.18; 1.4 s, 10.8 s | 0.17 / 0.19 | 0.34 / 0.50 | 0.27 / 0.41 | 350 s |

Unrelated rankings give tau 0 +- 0.25 (10 candidates) or +- 0.16 (20). The short proxy ranks candidates
only weakly, and no better than the free baselines: the transformers with local attention reach among the
lowest losses after 5 or 20 steps and among the highest after 200 (the teacher's last layer, trained to
classify whole words, needs context beyond +-8 frames), which a run of 5 or 20 steps does not show. At
N = 5 most of the proxy's time is the held-out evaluation, so 10 times the steps costs 3.5 times the time.

The corpus (``corpus.py``), the teacher (``word_teacher.py``) and the rank statistics (``ranking.py``) are
modules beside this file, shared with ``truth.py``; a script's own folder is on ``sys.path``, and the tests
load these files through ``tests/support.py``'s ``load_benchmark``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from corpus import (
    HELD_OUT_VOICES,
    SPEEDS,
    TRAIN_VOICES,
    WORDS,
    manifest_seconds,
    synthesize_speech,
    synthesize_tones,
    write_rows,
)
from ranking import kendall_tau, spearman_rho
from word_teacher import classifier_accuracy, train_teacher

import planner
from planner.ir.graph import EncoderGraph
from planner.search import load_space, sample_space
from trainers import distill_proxy, dump_recipe, load_recipe, recipe_from_dict, scan_folder
from trainers.recipe import Recipe
from trainers.teacher import Teacher, load_teacher

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "searchspaces" / "proxy-small.yaml"

Corpus = Literal["espeak", "synthetic"]


@dataclass(frozen=True)
class Setup:
    """A corpus on disk, a trained teacher and the base distillation recipe (``loss.layers`` unset)."""

    recipe: Recipe
    teacher: Teacher
    info: dict[str, Any]


def prepare(folder: Path, corpus: Corpus = "espeak", *, teacher_steps: int = 300, batch_seconds: float = 4.0,
            speeds: Sequence[int] = SPEEDS, synthetic_utterances: int = 48, log: Any = None) -> Setup:  # fmt: skip
    """Writes the corpus, trains the teacher and returns the base distillation recipe with the loaded teacher.

    Args:
        folder: an empty working folder (audio, manifests, the teacher's run, the recipe).
        corpus: ``espeak`` (spoken words) or ``synthetic`` (chirps).
        teacher_steps: classification steps for the teacher.
        batch_seconds: padded audio per batch, for the teacher and the students.
        speeds: espeak-ng speeds (words per minute) of the training voices; held-out voices use all of them.
        synthetic_utterances: training utterances of the synthetic corpus (half as many held out).
        log: where the teacher's progress lines go (None: silent).
    """
    t0 = time.perf_counter()
    train_dir, held_dir = folder / "audio" / "train", folder / "audio" / "held"
    if corpus == "espeak":
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError("espeak-ng is not installed (apt-get install -y espeak-ng); or use the synthetic corpus")
        train_rows = synthesize_speech(train_dir, TRAIN_VOICES, speeds, WORDS, exe)
        held_rows = synthesize_speech(held_dir, HELD_OUT_VOICES, speeds, WORDS, exe)
        max_seconds = 1.0
    else:
        train_rows = synthesize_tones(train_dir, synthetic_utterances, 4, seed=0)
        held_rows = synthesize_tones(held_dir, max(synthetic_utterances // 2, 4), 4, seed=1)
        max_seconds = 0.5
    train_m = scan_folder(train_dir, folder / "train.tsv")
    held_m = scan_folder(held_dir, folder / "valid.tsv")
    write_rows(folder / "labels.tsv", train_rows)
    write_rows(folder / "valid-labels.tsv", held_rows)  # train logs the teacher's held-out loss on them
    synth_s = time.perf_counter() - t0
    data = (f"{{train: [train.tsv], valid: valid.tsv, batch_seconds: {batch_seconds}, max_seconds: {max_seconds}, "
            "min_seconds: 0.1}")  # fmt: skip

    # the teacher: word classification, as a user would train it (planner train teacher.yaml --recipe ...)
    t1 = time.perf_counter()
    graph, result = train_teacher(folder, f"{data[:-1]}, labels: labels.tsv, valid_labels: valid-labels.tsv}}",
                                  teacher_steps, log=log)  # fmt: skip
    classes = sorted({w for _, w in train_rows})
    run = folder / "teacher"
    accuracy = classifier_accuracy(graph, run / "student.pt", run / "classifier.pt", held_rows, held_dir, classes)
    teacher_s = time.perf_counter() - t1

    (folder / "distill.yaml").write_text(
        "teacher: {kind: architecture, arch: teacher.yaml, checkpoint: teacher/student.pt}\n"
        f"data: {data}\nloss: {{masking: {{prob: 0.5, span: 3}}}}\noptimizer: {{lr: 2.0e-3}}\n"
        "schedule: {warmup_ratio: 0.1}\nsteps: 1\nseed: 0\n", encoding="utf-8")  # fmt: skip
    recipe = load_recipe(folder / "distill.yaml")
    teacher = load_teacher(recipe)
    info = {
        "corpus": corpus,
        "train_utterances": len(train_m.utterances), "train_seconds": round(manifest_seconds(train_m), 1),
        "held_out_utterances": len(held_m.utterances), "held_out_seconds": round(manifest_seconds(held_m), 1),
        "classes": len(classes), "synthesis_s": round(synth_s, 1),
        "teacher": {"arch": graph.name, "params": graph.param_count, "layers": teacher.num_layers,
                    "steps": teacher_steps, "train_accuracy": result.metrics[-1].get("accuracy") if result.metrics else None,
                    "held_out_accuracy": round(accuracy, 3), "chance": round(1 / len(classes), 3),
                    "train_s": round(teacher_s, 1)},
    }  # fmt: skip
    return Setup(recipe, teacher, info)


# -- candidates and runs ---------------------------------------------------------------------------------


def sample_candidates(space_path: str | Path, n: int, seed: int = 0) -> list[tuple[int, dict[str, Any], EncoderGraph]]:
    """The first ``n`` distinct valid architectures drawn by :func:`planner.search.sample_space` with ``seed``.

    Returns ``(sample index, domain values, graph)`` per candidate.
    """
    space = load_space(space_path)
    out: list[tuple[int, dict[str, Any], EncoderGraph]] = []
    seen: set[str] = set()
    draws = 4 * n
    while len(out) < n:
        out, seen = [], set()
        for s in sample_space(space, draws, seed=seed):  # the same seed: a longer draw extends a shorter one
            text = planner.dumps(s.graph) if s.graph is not None else None
            if text is not None and text not in seen:
                seen.add(text)
                out.append((s.index, s.values, s.graph))
                if len(out) == n:
                    break
        if len(out) < n and draws >= 64 * n:
            raise ValueError(f"{space_path}: only {len(out)} distinct valid architectures in {draws} samples")
        draws *= 2
    return out


def candidate_recipe(recipe: Recipe, graph: EncoderGraph, teacher_layers: int) -> Recipe:
    """``recipe`` with the candidate's last projection head mapped onto the teacher's last layer (weight 1)."""
    heads = [n for n in graph.nodes("heads") if n.kind == "projection_heads"]
    if not heads:
        raise ValueError(f"{graph.name}: needs a projection_heads head for distillation")
    last = max(heads[0].config.layer_indices(len(graph.nodes("layers"))))
    data = dump_recipe(recipe)
    data["loss"]["layers"] = {last: teacher_layers - 1}
    data["loss"]["weights"] = [1.0]
    return recipe_from_dict(data, "distill.yaml (per candidate)", recipe.base_dir)


def describe(graph: EncoderGraph) -> str:
    """``conformer k7, 4 x 64, 1 head, FFN 128``: the block, depth x width, heads and FFN of a candidate."""
    layers = graph.nodes("layers")
    first = layers[0]
    cfg = first.config
    block = first.kind + (f" k{cfg.kernel}" if hasattr(cfg, "kernel") else "")
    attention = getattr(cfg, "attention", None)
    if attention is not None and attention.kind != "full":
        block += f" {attention.kind}"
    return f"{block}, {len(layers)} x {graph.width}, {cfg.heads} head{'s' * (cfg.heads > 1)}, FFN {cfg.ffn}"


def _naswot(graph: EncoderGraph) -> float:
    from planner.search import EVALUATORS, NullContext

    return EVALUATORS["naswot"]().evaluate(graph, NullContext())["naswot"]


def rank_agreement(setup: Setup, candidates: Sequence[tuple[int, dict[str, Any], EncoderGraph]],
                   proxy_steps: Sequence[int] = (5, 20), factor: int = 10, eval_batches: int = 1000,
                   log: Any = None) -> dict[str, Any]:  # fmt: skip
    """Distils every candidate for N and ``factor`` x N steps per proxy length N; the rank agreement table.

    Returns:
        ``{"candidates": [per candidate: index, values, arch, params, naswot, loss and seconds per step
        count], "agreement": [rows: proxy, reference, kendall_tau, spearman, proxy_s, reference_s],
        "tau_null_sd": the standard deviation of tau between unrelated rankings of this many candidates}``;
        seconds per candidate are medians, each run timed from materializing the student to its held-out
        loss (the evaluation included).
    """
    lengths = sorted({n for n in proxy_steps} | {factor * n for n in proxy_steps})
    rows = []
    for index, values, graph in candidates:
        recipe = candidate_recipe(setup.recipe, graph, setup.teacher.num_layers)
        row: dict[str, Any] = {"index": index, "values": values, "arch": describe(graph), "params": graph.param_count,
                               "naswot": _naswot(graph), "loss": {}, "seconds": {}}  # fmt: skip
        for steps in lengths:
            t0 = time.perf_counter()
            *_, (_, loss) = distill_proxy(graph, recipe, steps, eval_every=steps, eval_batches=eval_batches,
                                          teacher=setup.teacher)  # fmt: skip
            row["seconds"][steps] = time.perf_counter() - t0
            row["loss"][steps] = loss
        rows.append(row)
        if log is not None:
            losses = "  ".join(f"{s}: {row['loss'][s]:.4f}" for s in lengths)
            print(
                f"sample {index:3d}: {row['arch']:40} {graph.param_count:>8,} params  loss at {losses}",
                file=log,
                flush=True,
            )

    def median_s(steps: int) -> float:
        return float(np.median([r["seconds"][steps] for r in rows]))

    def agree(name: str, scores: list[float], ref: int, proxy_s: float | None) -> dict[str, Any]:
        reference = [r["loss"][ref] for r in rows]
        return {"proxy": name, "reference": f"{ref} steps", "kendall_tau": kendall_tau(scores, reference),
                "spearman": spearman_rho(scores, reference), "proxy_s": proxy_s, "reference_s": median_s(ref)}  # fmt: skip

    table = [agree(f"{n} steps", [r["loss"][n] for r in rows], factor * n, median_s(n)) for n in proxy_steps]
    longest = max(lengths)
    table += [agree(f"{n} steps", [r["loss"][n] for r in rows], longest, median_s(n))
              for n in proxy_steps if factor * n != longest]  # fmt: skip
    table.append(agree("params", [-float(r["params"]) for r in rows], longest, 0.0))  # more parameters: lower loss
    table.append(agree("naswot", [-r["naswot"] for r in rows], longest, None))  # higher NASWOT: lower loss
    n = len(rows)
    return {"candidates": rows, "agreement": table, "tau_null_sd": float(np.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))))}


def benchmark(folder: Path, *, corpus: Corpus = "espeak", space: str | Path = SPACE, candidates: int = 10,
              seed: int = 0, proxy_steps: Sequence[int] = (5, 20), factor: int = 10, teacher_steps: int = 300,
              speeds: Sequence[int] = SPEEDS, synthetic_utterances: int = 48, log: Any = None) -> dict[str, Any]:  # fmt: skip
    """The whole measurement in ``folder``: corpus, teacher, candidates, runs; the result as plain data."""
    t0 = time.perf_counter()
    setup = prepare(folder, corpus, teacher_steps=teacher_steps, speeds=speeds,
                    synthetic_utterances=synthetic_utterances, log=log)  # fmt: skip
    picks = sample_candidates(space, candidates, seed)
    result = rank_agreement(setup, picks, proxy_steps, factor, log=log)
    return {"space": str(space), "seed": seed, "factor": factor, "threads": torch.get_num_threads(), **setup.info,
            **result, "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    """The agreement rows as a text table."""

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [f"{'proxy':>10} {'reference':>10} {'tau':>6} {'rho':>6} {'proxy s/cand':>13} {'ref s/cand':>11}"]
    for r in result["agreement"]:
        lines.append(f"{r['proxy']:>10} {r['reference']:>10} {r['kendall_tau']:6.2f} {r['spearman']:6.2f} "
                     f"{s(r['proxy_s']):>13} {s(r['reference_s']):>11}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--corpus", choices=("espeak", "synthetic"), default="espeak" if shutil.which("espeak-ng") else "synthetic"
    )
    ap.add_argument("--space", default=str(SPACE), help="search space the candidates are sampled from")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="sampler seed")
    ap.add_argument("--proxy-steps", type=int, nargs="+", default=[5, 20], help="proxy lengths N")
    ap.add_argument("--factor", type=int, default=10, help="the reference runs FACTOR x N steps")
    ap.add_argument("--teacher-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: repeatable timings on a shared machine)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if args.candidates < 2:
        ap.error("--candidates must be at least 2 (a ranking needs two)")
    if args.corpus == "espeak" and shutil.which("espeak-ng") is None:
        ap.error("espeak-ng is not installed (apt-get install -y espeak-ng); or pass --corpus synthetic")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = benchmark(folder, corpus=args.corpus, space=args.space, candidates=args.candidates, seed=args.seed,
                           proxy_steps=args.proxy_steps, factor=args.factor, teacher_steps=args.teacher_steps,
                           log=sys.stderr)  # fmt: skip
    t = result["teacher"]
    print(f"{result['corpus']} corpus: {result['train_utterances']} training utterances ({result['train_seconds']} s), "
          f"{result['held_out_utterances']} held out ({result['held_out_seconds']} s, "
        f"{'other voices' if result['corpus'] == 'espeak' else 'other draws'}), "
          f"{result['classes']} classes")  # fmt: skip
    print(f"teacher {t['arch']} ({t['params']:,} params, {t['steps']} steps): held-out accuracy "
          f"{t['held_out_accuracy']:.2f} (chance {t['chance']:.2f}), {t['train_s']} s")  # fmt: skip
    print(f"{len(result['candidates'])} candidates from {result['space']} (seed {result['seed']}), "
          f"{result['threads']} thread(s); seconds per candidate are medians")  # fmt: skip
    print(format_table(result))
    print(f"(tau between unrelated rankings of {len(result['candidates'])} candidates: 0 +- {result['tau_null_sd']:.2f}); "
          f"total {result['total_s']} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
