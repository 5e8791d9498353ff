"""Run a packed planner model on WAV files: ``python examples/run_packed.py PACKED_DIR a.wav [b.wav ...]``.

PACKED_DIR is what ``planner export RUN --out PACKED_DIR`` wrote from a run of ``planner train`` with a task
loss (its classifier, or its CTC head and alphabet, ride along). Only public functions: ``planner.load_packed``,
soundfile to read the audio, torchaudio to resample it and, for an architecture that takes filterbanks,
to compute them as the trainer did. It prints one line per file: the path, a tab, the class or transcript
(``planner evaluate PACKED_DIR --wav a.wav`` prints the same as JSON).
"""

from __future__ import annotations

import sys

import soundfile as sf
import torch
import torchaudio

import planner


def model_input(path: str, spec) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """A ``(1, samples)`` waveform, or ``(1, frames, n_mels)`` Kaldi filterbanks, and its ``(1,)`` length."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.mean(axis=1))  # mono
    if rate != spec.sample_rate:
        wav = torchaudio.functional.resample(wav, rate, spec.sample_rate)
    if spec.kind == "waveform":
        return wav[None], torch.tensor([wav.numel()])
    # the trainer's filterbanks: 16-bit scale, no dither, Hamming window, edges snipped
    feats = torchaudio.compliance.kaldi.fbank(
        wav[None] * 32768.0, num_mel_bins=spec.n_mels, sample_frequency=spec.sample_rate,
        frame_length=1000.0 * spec.win_length / spec.sample_rate,
        frame_shift=1000.0 * spec.hop_length / spec.sample_rate, dither=0.0, snip_edges=True, window_type="hamming",
    )  # fmt: skip
    return feats[None], torch.tensor([feats.shape[0]])


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    model = planner.load_packed(argv[0])  # eval mode, the packed weights exactly
    if model.task_head is None:
        print(f"{argv[0]}: exported without a task head; export a run with a task loss", file=sys.stderr)
        return 1
    with torch.no_grad():
        for path in argv[1:]:
            x, lengths = model_input(path, model.graph.spec.input)
            out = model(x, lengths)
            print(f"{path}\t{model.task_head.decode(out)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
