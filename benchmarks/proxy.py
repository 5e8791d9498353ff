"""Distillation throughput on this machine: examples/s and audio seconds/s of trainers.train steps.

Builds a synthetic corpus, a random-weight torchaudio teacher (``--teacher tiny`` or ``base`` = HuBERT BASE
size) and distils a student architecture for a few steps with the torch engine, then prints the rates
from the run's metrics (the first step, which warms up, is left out). Ratios, not absolute times, are
what carry across machines.
Whether the short proxy's held-out loss ranks candidates at all is measured by ``benchmarks/proxy_rank.py``.

    python benchmarks/proxy.py --arch tests/data/tiny-student.yaml --teacher tiny --steps 6
    python benchmarks/proxy.py --arch studies/recycle-and-distill/armhubert-s.yaml --teacher base --steps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

import planner
from trainers import loads_recipe, scan_folder, train
from trainers.teacher import TORCHAUDIO_BASE

TINY = {"extractor_conv_layer_config": [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]], "encoder_embed_dim": 48,
        "encoder_pos_conv_kernel": 8, "encoder_pos_conv_groups": 4, "encoder_num_layers": 3, "encoder_num_heads": 2,
        "encoder_ff_interm_features": 96}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tests/data/tiny-student.yaml")
    ap.add_argument("--teacher", choices=("tiny", "base"), default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0, help="utterance length")
    ap.add_argument("--batch", type=int, default=4, help="utterances per batch")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        (d / "audio").mkdir()
        for i in range(args.batch * 2):
            sf.write(
                d / "audio" / f"{i}.wav",
                (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32),
                16000,
            )
        scan_folder(d / "audio", d / "train.tsv")
        overrides = TINY if args.teacher == "tiny" else {}
        torch.manual_seed(0)
        torch.save(torchaudio.models.wav2vec2_model(**{**TORCHAUDIO_BASE, **overrides}).state_dict(), d / "t.pt")
        ov = ", ".join(f"{k}: {json.dumps(v)}" for k, v in overrides.items())
        graph = planner.load(args.arch)
        width = 48 if args.teacher == "tiny" else 768
        heads = [n for n in graph.nodes("heads") if n.kind == "projection_heads"]
        if not heads or heads[0].config.width != width:
            print(
                f"{args.arch}: needs projection heads of width {width} for the {args.teacher} teacher", file=sys.stderr
            )
            return 2
        text = (f"teacher: {{kind: torchaudio_hubert, checkpoint: t.pt, overrides: {{{ov}}}}}\n"
                f"data: {{train: [train.tsv], batch_seconds: {args.batch * args.seconds}, max_seconds: {args.seconds}}}\n"
                f"steps: {args.steps}\nlogging: {{every: 1}}\ncheckpoint: {{every: {args.steps}}}\n")  # fmt: skip
        t0 = time.perf_counter()
        result = train(graph, loads_recipe(text, base_dir=str(d)), d / "run", log=None)
        wall = time.perf_counter() - t0
        rates = [r["examples_per_s"] for r in result.metrics[1:]]
        eps = float(np.median(rates))
        print(f"{graph.name} <- {args.teacher} teacher, {torch.get_num_threads()} threads, batch {args.batch} x {args.seconds} s: "
              f"{eps:.2f} examples/s, {eps * args.seconds:.2f} audio s/s (median of steps 2-{args.steps}); "
              f"{wall:.1f} s wall for {args.steps} steps incl. setup")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
