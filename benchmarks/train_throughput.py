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

Data parallel (``--processes 1 2``): for each count, a torchrun job of that many processes of the torch
engine (each process its own batch of ``--batch`` utterances, one torch thread each, gloo on the CPU) times
``--steps`` steps after a warm-up; examples/s count every process, and the ratio is against the first count,
measured in the same run (one job after the other, so load changes between them are not averaged out):

    python benchmarks/train_throughput.py --student tiny --processes 1 2 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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
            settings[f"zero{stage}-{precision}"] = (
                f"engine: deepspeed\ndeepspeed: {{zero_stage: {stage}, precision: {precision}}}\n"
            )
    out = {}
    for name, extra in settings.items():
        torch.manual_seed(0)
        out[name] = build_engine(planner.materialize(graph), loads_recipe(RECIPE + extra))
    return out


def step_seconds(engine: Engine, loss_fn: Callable[[torch.nn.Module], torch.Tensor]) -> float:
    t = time.perf_counter()
    engine.step(loss_fn)
    return time.perf_counter() - t


def data_parallel_worker(args: argparse.Namespace) -> None:
    """One process of a ``--processes`` job: times the torch engine's steps on this process's own batch."""
    from trainers import distributed
    from trainers.engine import TorchEngine

    world = distributed.connect(distributed.world_from_env(), "torch")
    torch.manual_seed(0)
    engine = TorchEngine(planner.materialize(planner.load(STUDENTS[args.student[0]])), loads_recipe(RECIPE), world)
    gen = torch.Generator().manual_seed(world.rank)
    wave = torch.randn(args.batch, int(16000 * args.seconds), generator=gen).to(engine.device)

    def loss_fn(module: torch.nn.Module) -> torch.Tensor:
        return module(wave).output.float().square().mean()

    step_seconds(engine, loss_fn)  # warm-up
    times = [step_seconds(engine, loss_fn) for _ in range(args.steps)]  # each step waits for the gradient all-reduce
    if world.is_main:
        print(json.dumps({"examples_per_s": world.size * args.batch / statistics.median(times)}))


def data_parallel(args: argparse.Namespace) -> None:
    """Runs one torchrun job per process count and prints their examples/s side by side."""
    print(f"data-parallel training throughput, torch engine, CPU, gloo, 1 thread per process, batch {args.batch} x "
          f"{args.seconds:g} s per process, median of {args.steps} steps; ratio = examples/s / {args.processes[0]} "
          "process(es)'")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for student in args.student or list(STUDENTS):
        rate = {}
        for n in args.processes:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), __file__,
                   "--worker", "--student", student, "--batch", str(args.batch), "--seconds", str(args.seconds),
                   "--steps", str(args.steps)]  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rate[n] = json.loads(out.strip().splitlines()[-1])["examples_per_s"]
        print(f"  {student}:")
        for n, r in rate.items():
            print(f"    {n} process(es) {r:8.2f} examples/s   x{r / rate[args.processes[0]]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=sorted(STUDENTS), action="append", help="default: both")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=2, help="utterances per step")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each utterance")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per engine (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--processes", type=int, nargs="+", help="data parallel: torch-engine jobs of these sizes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process of such a job
    args = parser.parse_args()
    if args.worker:
        data_parallel_worker(args)
        return
    if args.processes:
        data_parallel(args)
        return
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
