"""Pricing speed: candidates per second for planner.estimate against planner profile, in one run.

    python benchmarks/cost_model.py

ARMHuBERT-S (12 layers) at 1 s, and the 32-layer USM graph (profiled on a short 0.5 s input).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import yaml

from planner.cost import estimate
from planner.cost.profile import profile
from planner.ir import from_dict

ROOT = Path(__file__).resolve().parent.parent


def _rate(fn, seconds: float = 1.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(n)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    cases = [("armhubert-s", ROOT / "studies/recycle-and-distill/armhubert-s.yaml", 16000, 16000),
             ("usm-2b", ROOT / "studies/usm-lite/usm-2b.yaml", 16000, 8000)]  # fmt: skip
    for name, path, samples, prof_samples in cases:
        data = yaml.safe_load(path.read_text())
        graph = from_dict(data)
        rng = random.Random(0)
        # distinct candidates: new graph objects with other utterance lengths (nothing cached per graph)
        graphs = [from_dict(data) for _ in range(200)]
        same = _rate(lambda i: estimate(graph, samples=samples, layers=False))  # noqa: B023 (called within the iteration)
        lengths = _rate(lambda i: estimate(graph, samples=rng.randint(8000, 480000), layers=False))  # noqa: B023 (called within the iteration)
        fresh = _rate(lambda i: estimate(graphs[i % 200], samples=samples + i, layers=False))  # noqa: B023 (called within the iteration)
        start = time.perf_counter()
        result = profile(graph, samples=prof_samples)
        prof_s = time.perf_counter() - start
        print(f"{name}: estimate {same:,.0f}/s (same graph), {lengths:,.0f}/s (random lengths), "
              f"{fresh:,.0f}/s (new graph objects, first pricing); profile {prof_s:.2f} s "
              f"({prof_samples} samples, rel. MAC error {result.to_dict()['rel_error']['macs']:.1e}); "
              f"ratio {same * prof_s:,.0f}x / {fresh * prof_s:,.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
