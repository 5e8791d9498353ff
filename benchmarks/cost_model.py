"""Pricing speed: candidates per second for planner.estimate against planner profile, in one run.

    python benchmarks/cost_model.py [--seconds 1.0]

ARMHuBERT-S (12 layers) at 1 s, and the 32-layer USM graph (profiled on a short 0.5 s input). Rates, all
measured side by side in this run:

* ``same graph``: re-pricing one graph object (everything memoized: the best case, not a search);
* ``new candidates``: what a search pays per trial: each candidate is a *new* graph object whose FFN size,
  head count, reuse pattern and weight bits are drawn from a small pool, so the per-node memo hits
  across candidates as it does in a search (each graph is priced once; timed after an untimed warm-up of
  the same length, i.e. the steady state of a long search);
* ``new lengths``: one graph at random utterance lengths (every node re-priced at each new length);
* ``from_dict``: building the graph of a candidate from plain data (parse and validate), which a search
  also pays per trial, so ``candidate total`` is the two together.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path
from typing import Any

import yaml

from planner.cost import estimate
from planner.ir import from_dict
from planner.profile import profile

ROOT = Path(__file__).resolve().parent.parent


def _rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(n)
        n += 1
    return n / (time.perf_counter() - start)


def _candidate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A variant of ``data``: FFN size, heads, reuse and weight bits of its layers from a small pool."""
    d = copy.deepcopy(data)
    layer = d["layers"][0]
    n = sum(b.get("repeat", 1) for b in d["layers"])
    layer["ffn"] = (
        rng.choice([layer["ffn"], 2 * layer["ffn"]]) if isinstance(layer.get("ffn"), int) else layer.get("ffn")
    )
    heads = layer.get("heads", 1)
    layer["heads"] = rng.choice([heads, heads // 2 if heads % 2 == 0 and d["width"] % (heads // 2) == 0 else heads])
    d["reuse"] = rng.choice(["none", f"2by{n // 2}", *([f"4by{n // 4}"] if n % 4 == 0 else [])])
    bits = rng.choice([None, 8, 4])
    if bits:
        d["compression"] = [{"layers": "all", "modules": ["attention", "ffn"], "weight": f"int{bits}"}]
    return d


def _new_candidates(data: dict[str, Any], samples: int, seconds: float) -> tuple[float, float]:
    """(candidates priced per second, seconds of from_dict per candidate), timed apart over the same candidates.

    Candidates are built and priced in small batches and then dropped, as a search holds one graph at a
    time (hundreds of live graphs would make the garbage collector's scans the main cost). One untimed
    batch of the same length first warms the memo, as the first trials of a search do.
    """
    rng = random.Random(0)
    priced = 0
    t_est = t_build = 0.0
    for timed in (False, True):
        count, t_est, t_build, start = 0, 0.0, 0.0, time.perf_counter()
        while (t_est if timed else time.perf_counter() - start) < seconds:
            datas = [_candidate(data, rng) for _ in range(10)]
            t0 = time.perf_counter()
            graphs = [from_dict(d) for d in datas]
            t1 = time.perf_counter()
            for g in graphs:
                estimate(g, samples=samples, layers=False)
            t_est += time.perf_counter() - t1
            t_build += t1 - t0
            count += len(graphs)
            del graphs  # a search drops each graph after its trial
        priced = count
    return priced / t_est, t_build / priced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measured rate")
    args = parser.parse_args()
    cases = [("armhubert-s", ROOT / "studies/recycle-and-distill/armhubert-s.yaml", 16000, 16000),
             ("usm-2b", ROOT / "studies/usm-lite/usm-2b.yaml", 16000, 8000)]  # fmt: skip
    for name, path, samples, prof_samples in cases:
        data = yaml.safe_load(path.read_text())
        graph = from_dict(data)
        rng = random.Random(0)
        same = _rate(lambda i: estimate(graph, samples=samples, layers=False), args.seconds)  # noqa: B023 (called within the iteration)
        lengths = _rate(lambda i: estimate(graph, samples=rng.randint(8000, 480000), layers=False), args.seconds)  # noqa: B023
        fresh, build_s = _new_candidates(data, samples, args.seconds)
        total = 1 / (1 / fresh + build_s)
        start = time.perf_counter()
        result = profile(graph, samples=prof_samples)
        prof_s = time.perf_counter() - start
        print(f"{name}:\n"
              f"  estimate, same graph        {same:12,.0f} /s\n"
              f"  estimate, new candidates    {fresh:12,.0f} /s   (target >= 20,000 /s for armhubert-s)\n"
              f"  estimate, new lengths       {lengths:12,.0f} /s\n"
              f"  from_dict per candidate     {build_s * 1e6:12,.0f} us  ({1 / build_s:,.0f} /s)\n"
              f"  candidate total (build + estimate) {total:,.0f} /s\n"
              f"  profile {prof_s:.2f} s ({prof_samples} samples, rel. MAC error "
              f"{result.to_dict()['rel_error']['macs']:.1e}); profile / estimate: "
              f"{same * prof_s:,.0f}x (same graph), {fresh * prof_s:,.0f}x (new candidates)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
