"""Training-step time of compressed students against the float model, measured side by side on the CPU.

Runs ARMHuBERT-S (studies/recycle-and-distill/armhubert-s.yaml) as float, with int4 QAT + 2:4 masks on
every layer's attention and FFN, and with BiT W1A1 on every layer's attention and FFN. A step is
``zero_grad``, forward, backward of a mean-square loss on the output, ``AdamW.step`` (the same optimizer
for all three: the trainers' default, ``AdamW(fused=True)``) and, for the compressed models, the mask clock.
Steps are interleaved (float, int4+2:4, W1A1 at each input shape, then again) so load changes hit all of
them alike, and the ratios of median step times are printed with the float ms/step.

N:M-pruned weights get no gradient, so their AdamW second moments are exactly 0, and ATen's vectorized
``sqrt`` of zeros is about 14 times slower than of other values on this CPU: torch's single-tensor AdamW
(``--single-tensor-adamw``, what ``optimizer.fused: false`` trains with) then steps int4+2:4 about twice as
slowly as float although the parameters are the same; the fused kernel has no such slowdown.

    python benchmarks/compression.py                          # batch 1 x 1 s and batch 2 x 2 s, 3 timed steps
    python benchmarks/compression.py --steps 10 --threads 1
    python benchmarks/compression.py --shape 4x1.5            # batch x seconds, repeatable
    python benchmarks/compression.py --single-tensor-adamw
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import planner
from planner.ir.spec import dump_spec

ARCH = "studies/recycle-and-distill/armhubert-s.yaml"
SETTINGS = {
    "float": [],
    "int4+2:4": [{"layers": "all", "modules": ["attention", "ffn"], "weight": "int4", "sparsity": "2:4"}],
    "w1a1": [{"layers": "all", "modules": ["attention", "ffn"], "weight": "binary", "activation": "binary"}],
}
SHAPES = ((1, 1.0), (2, 2.0))


def build(rules: list, fused: bool = True) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """ARMHuBERT-S with the compression ``rules`` (seed 0: the same initial weights for every setting) and its AdamW."""
    doc = dump_spec(planner.load(ARCH).spec)
    if rules:
        doc["compression"] = rules
    torch.manual_seed(0)
    model = planner.materialize(planner.from_dict(doc)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, wave: torch.Tensor) -> float:
    """Seconds of one training step."""
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    model(wave).output.square().mean().backward()
    opt.step()
    if hasattr(model, "mask_schedule"):
        model.mask_schedule.step()
    return time.perf_counter() - t


def shape(text: str) -> tuple[int, float]:
    """``"BxS"`` -> (batch, seconds)."""
    try:
        b, s = text.lower().split("x")
        return int(b), float(s)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not BATCHxSECONDS (e.g. 2x1.5)") from err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting and shape (after one warm-up)")
    parser.add_argument("--shape", type=shape, action="append", help="BATCHxSECONDS; default 1x1 and 2x2")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--single-tensor-adamw",
        action="store_true",
        help="torch's single-tensor AdamW for every setting (default: fused, as the trainers)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shape or list(SHAPES)
    gen = torch.Generator().manual_seed(0)
    waves = {s: torch.randn(s[0], int(16000 * s[1]), generator=gen) for s in shapes}
    runs = {name: build(rules, not args.single_tensor_adamw) for name, rules in SETTINGS.items()}
    times: dict[tuple, list[float]] = {(s, name): [] for s in shapes for name in runs}
    for wave in waves.values():  # warm-up: the first step computes masks and initialises BiT's alpha
        for model, opt in runs.values():
            step(model, opt, wave)
    for _ in range(args.steps):
        for s, wave in waves.items():
            for name, (model, opt) in runs.items():
                times[s, name].append(step(model, opt, wave))
    adamw = "single-tensor AdamW" if args.single_tensor_adamw else "fused AdamW"
    print(f"ARMHuBERT-S training step (forward, backward, {adamw}), CPU, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps")  # fmt: skip
    for s in shapes:
        base = statistics.median(times[s, "float"])
        ratios = "   ".join(
            f"{name} x{statistics.median(times[s, name]) / base:.2f}" for name in runs if name != "float"
        )
        print(f"  batch {s[0]} x {s[1]:g} s: float {base * 1000:7.1f} ms/step   {ratios}")


if __name__ == "__main__":
    main()
