"""Does the short distillation proxy rank candidates like a run 10 times longer? Kendall's tau, measured.

Samples ``--candidates`` distinct students (width x depth x FFN, all with projection heads to a tiny
random-weight torchaudio teacher), distils each for ``--steps`` steps and for ``10 x --steps`` steps with
:func:`trainers.distill_proxy` on the same synthetic corpus, and prints both held-out losses, Kendall's tau
between the two rankings, and the proxy's time per candidate on this machine.

    python benchmarks/proxy_rank.py --candidates 8 --steps 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

import planner
from trainers import distill_proxy, loads_recipe, scan_folder
from trainers.teacher import TORCHAUDIO_BASE, load_teacher

TINY = {"extractor_conv_layer_config": [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]], "encoder_embed_dim": 48,
        "encoder_pos_conv_kernel": 8, "encoder_pos_conv_groups": 4, "encoder_num_layers": 3, "encoder_num_heads": 2,
        "encoder_ff_interm_features": 96}  # fmt: skip

STUDENT = """
name: s{i}
width: {width}
frontend:
  - {{kind: conv_extractor, conv_layers: [[16, 10, 5], [16, 4, 4], [{width}, 4, 4], [{width}, 2, 2]], output_norm: true}}
  - {{kind: mask_embedding}}
  - {{kind: conv_pos_embedding, kernel: 8, groups: 4}}
  - {{kind: layer_norm}}
layers:
  - {{kind: transformer, repeat: {depth}, heads: 2, ffn: {ffn}}}
heads:
  - {{kind: projection_heads, width: 48}}
"""


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two score lists (ties count as neither concordant nor discordant)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    s = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    return float(s) / len(pairs)


def _corpus(folder: Path, n: int, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        t = np.arange(int(seconds * 16000)) / 16000
        f0 = rng.uniform(100, 800)
        wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + rng.uniform(0, 2) * t)) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"{i}.wav", wav.astype(np.float32), 16000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="proxy steps; the reference runs 10 times longer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    grid = list(itertools.product((16, 32, 64), (1, 2, 3), (16, 64, 256)))
    picks = rng.sample(grid, args.candidates)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _corpus(d / "train", 16, 0.5, 0)
        _corpus(d / "valid", 8, 0.5, 1)
        scan_folder(d / "train", d / "train.tsv")
        scan_folder(d / "valid", d / "valid.tsv")
        torch.manual_seed(0)
        torch.save(torchaudio.models.wav2vec2_model(**{**TORCHAUDIO_BASE, **TINY}).state_dict(), d / "t.pt")
        ov = ", ".join(f"{k}: {json.dumps(v)}" for k, v in TINY.items())
        recipe = loads_recipe(
            f"teacher: {{kind: torchaudio_hubert, checkpoint: t.pt, overrides: {{{ov}}}}}\n"
            "data: {train: [train.tsv], valid: valid.tsv, batch_seconds: 2.0, max_seconds: 0.5, min_seconds: 0.1}\n"
            "loss: {masking: {prob: 0.5, span: 5}}\noptimizer: {lr: 2.0e-3}\nschedule: {warmup_ratio: 0.1}\nsteps: 1\n",
            base_dir=str(d),
        )  # fmt: skip
        teacher = None
        short, long_, times = [], [], []
        for i, (width, depth, ffn) in enumerate(picks):
            graph = planner.loads(STUDENT.format(i=i, width=width, depth=depth, ffn=ffn))
            teacher = teacher or load_teacher(recipe, graph)
            t0 = time.perf_counter()
            s = list(distill_proxy(graph, recipe, args.steps, teacher=teacher))[-1][1]
            times.append(time.perf_counter() - t0)
            ref = list(distill_proxy(graph, recipe, 10 * args.steps, teacher=teacher))[-1][1]
            short.append(s)
            long_.append(ref)
            print(f"candidate {i}: width {width:3d} depth {depth} ffn {ffn:3d} ({graph.param_count:>8,} params): "
                  f"proxy {s:.4f}  reference {ref:.4f}", flush=True)  # fmt: skip
    tau = kendall_tau(short, long_)
    print(f"Kendall's tau (proxy {args.steps} steps vs reference {10 * args.steps} steps, {args.candidates} candidates): "
          f"{tau:.2f}; proxy time per candidate {np.median(times):.2f} s (median), {torch.get_num_threads()} threads")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
