"""Training throughput (examples/s) of the torch engine against DeepSpeed ZeRO stages and precisions, side by side.

Builds one engine per setting around the same student (seed 0) — ``torch``, then DeepSpeed ZeRO 0/1/2
(``--stages``) in fp32 and bf16 (``--precisions``), one process, DeepSpeed's CPU accelerator without a GPU —
and times ``engine.step`` (forward, a mean-square loss on the encoder output, backward, clipping, AdamW,
the schedule) on a fixed batch of random waveforms. Steps are interleaved (every engine once, then again)
so load changes hit all settings alike; examples/s come from the median step time, and each ratio is
against the torch engine measured in the same run. Students: the 2-layer test student
(``tests/data/tiny-student.yaml``) and ARMHuBERT-S (``studies/recycle-and-distill/armhubert-s.yaml``).

    python benchmarks/train_throughput.py                        # both students, batch 2 x 1 s, 3 timed steps
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --threads 1 --steps 5
    python benchmarks/train_throughput.py --student tiny --stages 0 1 2 3 --batch 4 --seconds 0.5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import planner
from trainers import loads_recipe
from trainers.engine import Engine, build_engine

STUDENTS = {"tiny": "tests/data/tiny-student.yaml", "armhubert-s": "studies/recycle-and-distill/armhubert-s.yaml"}
# Only the engine and its optimizer are built: the teacher and the manifest are never read.
RECIPE = """\
teacher: {kind: torchaudio_hubert}
data: {train: unused.tsv}
optimizer: {lr: 1.0e-4}
steps: 1000
"""


def engines(arch: str, stages: list[int], precisions: list[str]) -> dict[str, Engine]:
    """One engine per setting, each around its own copy of the student (the same initial weights)."""
    graph = planner.load(arch)
    settings = {"torch": "engine: torch\n"}
    for precision in precisions:
        for stage in stages:
            settings[f"zero{stage}-{precision}"] = f"engine: deepspeed\ndeepspeed: {{zero_stage: {stage}, precision: {precision}}}\n"
    out = {}
    for name, extra in settings.items():
        torch.manual_seed(0)
        out[name] = build_engine(planner.materialize(graph), loads_recipe(RECIPE + extra))
    return out


def step_seconds(engine: Engine, loss_fn: Callable[[torch.nn.Module], torch.Tensor]) -> float:
    t = time.perf_counter()
    engine.step(loss_fn)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=sorted(STUDENTS), action="append", help="default: both")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=2, help="utterances per step")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each utterance")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per engine (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wave = torch.randn(args.batch, int(16000 * args.seconds), generator=torch.Generator().manual_seed(0))
    print(f"training throughput, CPU, {torch.get_num_threads()} threads, batch {args.batch} x {args.seconds:g} s, "
          f"median of {args.steps} interleaved steps; ratio = examples/s / torch engine's")  # fmt: skip
    for student in args.student or list(STUDENTS):
        runs = engines(STUDENTS[student], args.stages, args.precisions)

        def loss_fn(module: torch.nn.Module) -> torch.Tensor:
            x = wave.to(next(module.parameters()).dtype)  # bf16/fp16 weights take inputs of their dtype
            return module(x).output.float().square().mean()

        times: dict[str, list[float]] = {name: [] for name in runs}
        for engine in runs.values():  # warm-up
            step_seconds(engine, loss_fn)
        for _ in range(args.steps):
            for name, engine in runs.items():
                times[name].append(step_seconds(engine, loss_fn))
        rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
        print(f"  {student}:")
        for name in runs:
            print(f"    {name:<12} {rate[name]:8.2f} examples/s   x{rate[name] / rate['torch']:.2f}")


if __name__ == "__main__":
    main()
