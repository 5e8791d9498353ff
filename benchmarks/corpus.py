"""The spoken-word corpus of the ranking benchmarks (proxy_rank.py, truth.py), written at 16 kHz.

* espeak-ng speech: the ten digits and ten command words (:data:`WORDS`) in every voice at every speed
  (:data:`TRAIN_VOICES` x :data:`SPEEDS` for training, :data:`HELD_OUT_VOICES` held out);
* real recordings: the installed asterisk digits (:func:`trainers.demo.real_digits`, resampled from 8 kHz), a
  second held-out set of the digits only;
* chirps in frequency bands (the band is the label), for machines without espeak-ng and for the tests.

Each writer returns ``(file name, label)`` rows; :func:`write_manifest` writes a manifest whose root line is
relative to the manifest's folder, so a corpus folder can be moved; :func:`file_hashes` fingerprints one.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from trainers.data import Manifest
from trainers.demo import ASTERISK, real_digits

__all__ = ["HELD_OUT_VOICES", "RATE", "SPEEDS", "TRAIN_VOICES", "WORDS", "copy_real_digits", "file_hashes",
           "manifest_seconds", "synthesize_speech", "synthesize_tones", "write_16k", "write_manifest", "write_rows"]  # fmt: skip

RATE = 16000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # fmt: skip
TRAIN_VOICES = ("en+m1", "en+m3", "en+f2", "en+f4", "en-us+m5", "en-us+f3")
HELD_OUT_VOICES = ("en+m7", "en+f5")
SPEEDS = (120, 160)  # words per minute


def write_16k(path: Path, wav: np.ndarray, rate: int) -> int:
    """Writes mono float audio at 16 kHz (resampled once here, not on every read); returns its samples."""
    if rate != RATE:
        import torchaudio.functional as AF

        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate, RATE).numpy()
    sf.write(path, wav.astype(np.float32), RATE)
    return len(wav)


def synthesize_speech(folder: Path, voices: Sequence[str], speeds: Sequence[int], words: Sequence[str],
                      exe: str = "espeak-ng") -> list[tuple[str, str]]:  # fmt: skip
    """Speaks every word in every voice at every speed into ``folder``; returns ``(file name, word)`` rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for v, s, w in itertools.product(voices, speeds, words):
        name = f"{v}-{s}-{w}.wav"
        subprocess.run([exe, "-w", str(folder / name), "-v", v, "-s", str(s), w], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        data, rate = sf.read(folder / name, dtype="float32")
        write_16k(folder / name, data, rate)
        rows.append((name, w))
    return rows


def synthesize_tones(folder: Path, n: int, classes: int, seed: int, seconds: float = 0.5) -> list[tuple[str, str]]:
    """Chirps whose start frequency lies in one of ``classes`` bands (the label) with noise; ``(name, band)``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    t = np.arange(int(seconds * RATE)) / RATE
    edges = np.geomspace(100, 1600, classes + 1)
    for i in range(n):
        c = i % classes
        f0 = rng.uniform(edges[c], edges[c + 1])
        wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + rng.uniform(0, 1) * t)) + 0.02 * rng.standard_normal(t.size)
        name = f"{i}.wav"
        write_16k(folder / name, wav, RATE)
        rows.append((name, f"band{c}"))
    return rows


def copy_real_digits(folder: Path, words: Sequence[str], root: Path = ASTERISK) -> list[tuple[str, str]]:
    """The installed real recordings of the digits among ``words``, at 16 kHz in ``folder``; ``(name, word)``.

    Every speaker of :func:`trainers.demo.real_digits` that has all of them; no rows when none is installed.
    """
    digits = [w for w in words if w in WORDS[:10]]
    rows = []
    for speaker, files in real_digits(digits, root).items():
        folder.mkdir(parents=True, exist_ok=True)
        for path, word in files:
            data, rate = sf.read(path, dtype="float32")
            name = f"{speaker}-{word}.wav"
            write_16k(folder / name, data.mean(axis=1) if data.ndim > 1 else data, rate)
            rows.append((name, word))
    return rows


def write_rows(path: Path, rows: Sequence[tuple[str, str]], prefix: str = "") -> Path:
    """``prefix + name<TAB>label`` per row (a labels TSV)."""
    path.write_text("".join(f"{prefix}{p}\t{w}\n" for p, w in rows), encoding="utf-8")
    return path


def write_manifest(path: Path, audio: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """A manifest of ``rows``' files under ``audio``, its root line relative to ``path``'s folder."""
    root = os.path.relpath(audio, path.parent)
    lines = [root, *(f"{name}\t{sf.info(str(audio / name)).frames}" for name, _ in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def manifest_seconds(manifest: Manifest) -> float:
    """The audio of a manifest in seconds."""
    return sum(u.samples for u in manifest.utterances) / RATE


def file_hashes(folder: Path) -> dict[str, str]:
    """``{path relative to folder: sha256 hex}`` of every file under ``folder``, sorted by path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
