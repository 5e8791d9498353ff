"""Training-step time of compressed students against the float model, measured side by side on the CPU.

Runs ARMHuBERT-S (studies/recycle-and-distill/armhubert-s.yaml) as float, with int4 QAT + 2:4 masks on
every layer's linears, and with BiT W1A1 on every layer's linears; steps are interleaved (float, int4+2:4,
W1A1, float, ...) so load changes hit all three alike, and the ratios of median step times are printed.

    python benchmarks/compression.py               # 3 timed steps of 1 s audio, batch 1
    python benchmarks/compression.py --steps 10 --seconds 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import planner

ARCH = "studies/recycle-and-distill/armhubert-s.yaml"
SETTINGS = {
    "float": [],
    "int4+2:4": [{"layers": "all", "modules": ["attention", "ffn"], "weight": "int4", "sparsity": "2:4"}],
    "w1a1": [{"layers": "all", "modules": ["attention", "ffn"], "weight": "binary", "activation": "binary"}],
}


def build(rules: list) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    data = planner.load(ARCH).spec
    from planner.ir.spec import dump_spec

    doc = dump_spec(data)
    if rules:
        doc["compression"] = rules
    torch.manual_seed(0)
    model = planner.materialize(planner.from_dict(doc)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def step(model, opt, wave) -> float:
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    model(wave).output.square().mean().backward()
    opt.step()
    if hasattr(model, "mask_schedule"):
        model.mask_schedule.step()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    wave = torch.randn(args.batch, int(16000 * args.seconds))
    runs = {name: build(rules) for name, rules in SETTINGS.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for model, opt in runs.values():  # warm-up: first step computes masks, BiT alpha init
        step(model, opt, wave)
    for _ in range(args.steps):
        for name, (model, opt) in runs.items():
            times[name].append(step(model, opt, wave))
    base = statistics.median(times["float"])
    print(f"ARMHuBERT-S training step, CPU, {torch.get_num_threads()} threads, batch {args.batch} x {args.seconds:g} s, "
          f"median of {args.steps}")  # fmt: skip
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:10s} {med * 1000:8.1f} ms   x{med / base:.2f} of float")


if __name__ == "__main__":
    main()
