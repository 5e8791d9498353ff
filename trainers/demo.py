"""``planner data demo OUT``: a small spoken-digit corpus built offline, in the formats the trainers read.

Words (the ten digits, or the first ``words`` of them) are spoken by espeak-ng in :data:`TRAIN_VOICES` at
:data:`SPEEDS` for training and in :data:`HELD_OUT_VOICES` (voices never trained on) for the held-out set;
each utterance gets a pitch drawn from ``seed``, so a seed fixes every file. Where Debian's
``asterisk-core-sounds-en-wav`` is installed, its real recordings of the digits (one folder per speaker under
``/usr/share/asterisk/sounds/en*/digits``) are a second held-out set. ``synthetic=True`` writes chirps in
frequency bands instead (one band per word, "voices" are other random draws): for machines without
espeak-ng, and for the test suite. Every file is written at 16 kHz (resampled once here).

The folder ``OUT`` (swapped in whole: a failure leaves no half corpus)::

    audio/train/*.wav  audio/held/*.wav  audio/real/*.wav   16 kHz mono
    train.tsv, valid.tsv      manifests (root, then relative/path<TAB>samples) of the training / held-out voices
    labels.tsv                the training words (paths relative to the manifest root): a recipe's data.labels
    probe-train.tsv, probe-held.tsv, probe-real.tsv   path<TAB>word, paths relative to OUT (probe tasks)
    task-held.yaml, task-real.yaml                    linear-probe tasks of ``planner evaluate``
    corpus.json               what was built: kind, seed, classes, voices, counts and seconds per set
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from planner.errors import DemoError, WriteError
from planner.files import staged_dir, write_text_atomic

__all__ = ["HELD_OUT_VOICES", "SPEEDS", "TRAIN_VOICES", "WORDS", "DemoCorpus", "build_demo_corpus", "real_digits"]

RATE = 16000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_VOICES = ("en+m1", "en+m3", "en+f2", "en+f4", "en-us+m5", "en-us+f3")
HELD_OUT_VOICES = ("en+m7", "en+f5")
SPEEDS = (130, 170)  # words per minute
ASTERISK = Path("/usr/share/asterisk/sounds")
ESPEAK_PACKAGE = "espeak-ng"  # the Debian/Ubuntu package (and the executable) that speaks the words
REAL_PACKAGE = "asterisk-core-sounds-en-wav"
_PITCH = (30, 70)  # espeak-ng -p range the seed draws from (its default is 50)


@dataclass(frozen=True)
class DemoCorpus:
    """A built corpus: its folder and ``corpus.json``'s content."""

    root: Path
    info: dict[str, Any]


def real_digits(words: Sequence[str], root: Path = ASTERISK) -> dict[str, list[tuple[Path, str]]]:
    """The installed real recordings of ``words``: ``{speaker folder name: [(wav, word)]}`` (may be empty).

    A speaker counts only if it has every one of ``words`` (``digits/0.wav`` ...), so each real set is balanced.
    """
    found: dict[str, list[tuple[Path, str]]] = {}
    if not root.is_dir():
        return found
    for speaker in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("en")):
        files = [(speaker / "digits" / f"{WORDS.index(w)}.wav", w) for w in words]
        if all(f.is_file() for f, _ in files):
            found[speaker.name] = files
    return found


def _write_16k(path: Path, wav: np.ndarray, rate: int) -> int:
    """Writes mono float audio at 16 kHz as 16-bit PCM; returns its samples."""
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if rate != RATE:
        import torch
        import torchaudio.functional as AF

        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate, RATE).numpy()
    sf.write(path, np.clip(wav, -1.0, 1.0).astype(np.float32), RATE, subtype="PCM_16")
    return len(wav)


def _speak(exe: str, folder: Path, voices: Sequence[str], words: Sequence[str], rng: np.random.Generator,
           ) -> list[tuple[str, str, int]]:  # fmt: skip
    """Every word in every voice at every speed; ``(file name, word, samples)`` rows."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        for v, s, w in itertools.product(voices, SPEEDS, words):
            pitch = int(rng.integers(_PITCH[0], _PITCH[1] + 1))
            proc = subprocess.run([exe, "-w", str(raw), "-v", v, "-s", str(s), "-p", str(pitch), w],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
            if proc.returncode != 0:
                raise DemoError(f"{exe} -v {v}: failed ({proc.stderr.strip() or proc.returncode}); "
                                f"espeak-ng --voices=en lists the installed voices")  # fmt: skip
            data, rate = sf.read(raw, dtype="float32")
            name = f"{v}-{s}-{w}.wav"
            rows.append((name, w, _write_16k(folder / name, data, rate)))
    return rows


def _tones(folder: Path, voices: Sequence[str], words: Sequence[str], rng: np.random.Generator,
           ) -> list[tuple[str, str, int]]:  # fmt: skip
    """Chirps, one frequency band per word, per "voice" x speed a new draw; ``(name, word, samples)`` rows."""
    rows = []
    edges = np.geomspace(150, 2400, len(words) + 1)
    for v, s, (c, w) in itertools.product(voices, SPEEDS, enumerate(words)):
        seconds = 0.6 * 150 / s
        t = np.arange(int(seconds * RATE)) / RATE
        f0 = rng.uniform(edges[c], edges[c + 1])
        sweep = rng.uniform(0.0, 1.0)
        wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + sweep * t)) * np.hanning(t.size)
        wav = wav + 0.02 * rng.standard_normal(t.size)
        name = f"{v}-{s}-{w}.wav"
        rows.append((name, w, _write_16k(folder / name, wav, RATE)))
    return rows


def _manifest(path: Path, final_root: Path, rows: Sequence[tuple[str, str, int]]) -> None:
    """A fairseq manifest whose root is where the folder will be once swapped in (not the staging folder)."""
    path.write_text("\n".join([str(final_root), *(f"{n}\t{k}" for n, _, k in rows)]) + "\n", encoding="utf-8")


def _labels(path: Path, rows: Sequence[tuple[str, str, int]], prefix: str = "") -> None:
    path.write_text("".join(f"{prefix}{n}\t{w}\n" for n, w, _ in rows), encoding="utf-8")


def _task(path: Path, test: str, steps: int) -> None:
    path.write_text(
        "# linear probe on frozen features: trained on the training voices, tested on " + test + "\n"
        f"format: 1\nkind: classification\ntrain: probe-train.tsv\ntest: {test}\nsteps: {steps}\nlr: 1.0e-2\nseed: 0\n",
        encoding="utf-8",
    )


def build_demo_corpus(out: str | os.PathLike[str], *, seed: int = 0, synthetic: bool = False, words: int = 10,
                      probe_steps: int = 300, force: bool = False, real_root: Path = ASTERISK) -> DemoCorpus:  # fmt: skip
    """Builds the demo corpus into the folder ``out`` (see the module docstring for its layout).

    Args:
        out: a new or empty folder (or, with ``force``, an earlier demo corpus to replace).
        seed: draws every utterance's pitch (espeak-ng) or tone (synthetic): the same seed, the same files.
        synthetic: chirps instead of espeak-ng speech (no real held-out set then).
        words: how many of :data:`WORDS` (2 to 10), the classes of the probe.
        probe_steps: the probe's Adam steps written into the task files.
        force: replace an existing folder that holds a demo corpus.
        real_root: where the asterisk sound folders are looked for.

    Returns:
        The corpus and its description.

    Raises:
        DemoError: espeak-ng is missing (without ``synthetic``), or an option is out of range.
        WriteError: ``out`` is a file, or a non-empty folder that is not a demo corpus (or is one, without
            ``force``), or the disk is full.

    Example:
        >>> from trainers.demo import build_demo_corpus
        >>> build_demo_corpus("out/demo/data", synthetic=True).info["classes"]  # doctest: +SKIP
        10
    """
    if not 2 <= words <= len(WORDS):
        raise DemoError(f"--words: {words} is not a word count (allowed: 2 to {len(WORDS)})")
    if not 1 <= probe_steps <= 100_000:
        raise DemoError(f"--probe-steps: {probe_steps} is not a step count (allowed: 1 to 100,000)")
    if not 0 <= seed < 2**63:
        raise DemoError(f"--seed: {seed} is not a seed (allowed: 0 to 2**63 - 1)")
    exe = None
    if not synthetic:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise DemoError(f"espeak-ng is not installed: install the Debian/Ubuntu package {ESPEAK_PACKAGE} "
                            f"(sudo apt-get install -y {ESPEAK_PACKAGE}), or pass --synthetic for tone words")  # fmt: skip
    final = Path(out).resolve()
    _check_target(final, force)
    vocab = WORDS[:words]
    rng = np.random.default_rng(seed)
    real = {} if synthetic else real_digits(vocab, real_root)
    with staged_dir(final) as tmp:
        sets: dict[str, list[tuple[str, str, int]]] = {}
        for name, voices in (("train", TRAIN_VOICES), ("held", HELD_OUT_VOICES)):
            folder = tmp / "audio" / name
            folder.mkdir(parents=True)
            sets[name] = _tones(folder, voices, vocab, rng) if exe is None else _speak(exe, folder, voices, vocab, rng)
        _manifest(tmp / "train.tsv", final / "audio" / "train", sets["train"])
        _manifest(tmp / "valid.tsv", final / "audio" / "held", sets["held"])
        _labels(tmp / "labels.tsv", sets["train"])
        _labels(tmp / "probe-train.tsv", sets["train"], "audio/train/")
        _labels(tmp / "probe-held.tsv", sets["held"], "audio/held/")
        _task(tmp / "task-held.yaml", "probe-held.tsv", probe_steps)
        if real:
            folder = tmp / "audio" / "real"
            folder.mkdir(parents=True)
            rows = []
            for speaker, files in real.items():
                for wav, w in files:
                    data, rate = sf.read(wav, dtype="float32")
                    name = f"{speaker}-{w}.wav"
                    rows.append((name, w, _write_16k(folder / name, data, rate)))
            sets["real"] = rows
            _labels(tmp / "probe-real.tsv", rows, "audio/real/")
            _task(tmp / "task-real.yaml", "probe-real.tsv", probe_steps)
        info = {
            "type": "planner.demo-corpus", "format": 1, "kind": "synthetic" if exe is None else "espeak",
            "seed": seed, "classes": list(vocab), "chance": 1 / len(vocab),
            "voices": {"train": list(TRAIN_VOICES), "held": list(HELD_OUT_VOICES), "real": sorted(real)},
            "speeds": list(SPEEDS),
            "utterances": {k: len(v) for k, v in sets.items()},
            "seconds": {k: round(sum(n for *_, n in v) / RATE, 1) for k, v in sets.items()},
            "real_source": f"{real_root} ({REAL_PACKAGE})" if real else None,
        }  # fmt: skip
        write_text_atomic(tmp / "corpus.json", json.dumps(info, indent=1) + "\n")
    return DemoCorpus(final, info)


def _check_target(final: Path, force: bool) -> None:
    if final.exists() and not final.is_dir():
        raise WriteError(f"{final}: exists and is not a folder (give a new or empty folder)")
    if final.is_dir() and any(final.iterdir()):
        if not (final / "corpus.json").is_file():
            raise WriteError(f"{final}: the folder holds files that are not a demo corpus (no corpus.json); "
                             "give a new or empty folder")  # fmt: skip
        if not force:
            raise WriteError(f"{final}: holds a demo corpus already (pass --force to replace it)")


# -- the quickstart's table ------------------------------------------------------------------------------

STAGES_FILE = "stages.tsv"  # stage<TAB>seconds per line, appended by examples/quickstart.sh


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def quickstart_rows(out: str | os.PathLike[str]) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """The rows of the quickstart's table, read from its folder: ``(stage, metric, value, chance, seconds)``.

    Reads ``stages.tsv`` (seconds per stage), ``data/corpus.json``, the runs' ``metrics.jsonl``, the Pareto
    export's ``pareto.json`` and the probe results ``eval/*.json`` (``planner evaluate``'s output); a stage
    that has not run yet is left out. ``value`` is None where a stage has no number to show.
    """
    out = Path(out)
    seconds: dict[str, float] = {}
    if (out / STAGES_FILE).is_file():
        for line in (out / STAGES_FILE).read_text(encoding="utf-8").splitlines():
            stage, _, s = line.partition("\t")
            if stage:
                seconds[stage] = seconds.get(stage, 0.0) + float(s)
    rows: list[tuple[str, str, float | None, float | None, float | None]] = []
    corpus = _json(out / "data" / "corpus.json")
    if corpus is not None:
        rows.append(
            ("data", f"{corpus['kind']} utterances (train)", corpus["utterances"]["train"], None, seconds.get("data"))
        )
        for name in ("held", "real"):
            if name in corpus["utterances"]:
                rows.append(("data", f"utterances ({name})", corpus["utterances"][name], None, None))
    for stage, key in (("teacher", "accuracy"), ("search", None), ("distill", "loss"), ("qat", "loss")):
        if key is None:
            rows += _search_rows(out, seconds.get("search"))
            continue
        metrics = [m for m in _jsonl(out / "runs" / stage / "metrics.jsonl") if key in m]
        if metrics:
            if stage != "teacher":
                rows.append((stage, f"train {key} (first log)", metrics[0][key], None, None))
            rows.append((stage, f"train {key} (step {metrics[-1].get('step', '?')})", metrics[-1][key],
                         1 / len(corpus["classes"]) if stage == "teacher" and corpus else None, seconds.get(stage)))  # fmt: skip
    order = {name: i for i, name in enumerate(("teacher", "distill", "qat", "packed"))}
    probes = sorted((out / "eval").glob("*.json"), key=lambda p: (p.stem.split("-")[-1] != "held", p.stem.split("-")[-1],
                                                                  order.get(p.stem.rsplit("-", 1)[0], 9), p.stem))  # fmt: skip
    for path in probes:
        res = _json(path) or {}
        if "accuracy" in res:
            rows.append((f"probe {path.stem}", f"accuracy ({res.get('n_test', '?')} held out)", res["accuracy"],
                         res.get("chance"), seconds.get(f"probe {path.stem}")))  # fmt: skip
    packed = _json(out / "packed" / "manifest.json")
    if packed is not None:
        b = packed["payload_bytes"]
        rows.append(
            ("export", "packed bytes (weights + state)", b["weights"] + b["state"], None, seconds.get("export"))
        )
    if seconds:
        rows.append(("total", "stages timed", len(seconds), None, sum(seconds.values())))
    return rows


def _search_rows(out: Path, seconds: float | None) -> list[tuple[str, str, float | None, float | None, float | None]]:
    front = _json(out / "front" / "pareto.json")
    if front is None:
        return []
    points = front["points"]
    budgets = ", ".join(f"{k} <= {v:,.0f}" for k, v in front["budgets"].items())
    rows: list[tuple[str, str, float | None, float | None, float | None]] = [
        ("search", f"Pareto points ({budgets})" if budgets else "Pareto points", len(points), None, seconds)
    ]
    losses = [p["objectives"]["distill_loss"] for p in points if "distill_loss" in p["objectives"]]
    if losses:
        rows.append(("search", "lowest held-out distill_loss on the front", min(losses), None, None))
    return rows


def packed_matches(out: str | os.PathLike[str]) -> bool | None:
    """Whether every ``eval/packed-*.json`` equals its ``eval/qat-*.json`` (None if there is none to compare)."""
    out = Path(out)
    pairs = [
        (p, out / "eval" / p.name.replace("packed-", "qat-", 1)) for p in sorted((out / "eval").glob("packed-*.json"))
    ]
    if not pairs:
        return None

    def scores(path: Path) -> dict:  # what the probe measured; not which folder or checkpoint it read
        return {k: v for k, v in _json(path).items() if k not in ("run", "checkpoint")}

    return all(scores(p) == scores(q) for p, q in pairs)


def format_rows(rows: Sequence[tuple[str, str, float | None, float | None, float | None]]) -> str:
    """The table as aligned text: stage, metric, value, chance, seconds."""

    def num(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:,}" if isinstance(v, int) else f"{v:.3f}"

    head = ("stage", "metric", "value", "chance", "seconds")
    body = [(s, m, num(v), num(c), "-" if t is None else f"{t:.0f}") for s, m, v, c, t in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(5)]
    lines = []
    for r in [head, *body]:
        lines.append("  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)
