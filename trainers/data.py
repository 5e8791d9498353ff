"""Audio data: fairseq-style manifests, folder scanning, reading and resampling, length-bucketed batches.

A manifest is the fairseq wav2vec/HuBERT format: the first line is the root folder (absolute, or relative to
the manifest's own folder), then one line per utterance ``relative/path<TAB>num_samples`` (samples at the
file's own rate, at least 1). A labels file for downstream tasks is ``relative/path<TAB>label`` per line
(paths relative to the manifest's root, or to the labels file's folder). Paths in rows are data: each must stay
inside its root (no ``..`` or links out, see :func:`planner.files.confined`; an absolute path only inside an
absolute root), and every
mistake is reported as ``FILE: line N: problem``. Audio that holds no samples, or NaN or infinite ones, is
refused naming the file.

Batches are deterministic functions of ``(seed, epoch)``: the order of an epoch is drawn from a generator
seeded with both, so a position ``(epoch, batch index)`` is all a checkpoint needs to resume the stream.
A job of several processes shares one stream: every process builds the same one and takes its own batches
of each step (:meth:`BatchStream.take`).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from planner.errors import ConfigError, DataError, FieldError
from planner.files import confined
from planner.ir.spec import InputSpec

__all__ = [
    "AUDIO_SUFFIXES",
    "Batch",
    "BatchStream",
    "Manifest",
    "Utterance",
    "collate",
    "fbank_features",
    "read_audio",
    "read_labels",
    "read_manifest",
    "scan_folder",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class Utterance:
    """One manifest line: the absolute ``path`` and its length in samples at the file's rate."""

    path: str
    samples: int


@dataclass(frozen=True)
class Manifest:
    root: str
    utterances: tuple[Utterance, ...]


def scan_folder(root: str | os.PathLike[str], out_manifest: str | os.PathLike[str]) -> Manifest:
    """Writes a manifest of every ``.wav``/``.flac``/``.ogg`` file under ``root`` (recursively, sorted).

    Example:
        >>> scan_folder("LibriSpeech/train-clean-100", "train.tsv")  # doctest: +SKIP
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    lines, utts = [str(root)], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            frames = sf.info(str(p)).frames
            rel = p.relative_to(root).as_posix()
            lines.append(f"{rel}\t{frames}")
            utts.append(Utterance(str(p), frames))
    if not utts:
        raise DataError(f"{root}: no {'/'.join(AUDIO_SUFFIXES)} files found")
    out = Path(out_manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return Manifest(str(root), tuple(utts))


_MAX_ERRORS = 20  # located errors shown per file; the rest are counted


def _text_lines(path: str | os.PathLike[str], what: str) -> list[str]:
    """The lines of a UTF-8 text file; a byte that is not UTF-8 is ``FILE: line N: ...``.

    Raises:
        OSError: the file cannot be read (the caller words it).
        ConfigError: the file is not UTF-8.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError([FieldError(f"line {line}", f"byte 0x{data[err.start]:02x} is not UTF-8; save the {what} as "
                                                      "UTF-8 text")], str(path)) from None  # fmt: skip


def _check_inside(root: str, path: str, where: str, absolute_ok: bool) -> None:
    """Refuses a row's ``path`` unless it stays inside ``root``; an absolute one only where ``absolute_ok``
    (the root was written as an absolute path) and only inside the root."""
    if absolute_ok and os.path.isabs(path):
        path = os.path.relpath(path, root)  # outside the root: '../..', which confined() refuses
    confined(root, path, where)


def _raise_located(errors: list[FieldError], path: str | os.PathLike[str]) -> None:
    if len(errors) > _MAX_ERRORS:
        errors = [*errors[:_MAX_ERRORS], FieldError("", f"... and {len(errors) - _MAX_ERRORS} more lines")]
    if errors:
        raise ConfigError(errors, str(path))


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Reads a manifest; each malformed line is reported as ``FILE: line N: problem``.

    Rows are confined to the root folder (no ``..`` or links out; an absolute row only under an absolute root
    line, and inside it); a relative root line is taken against the manifest's folder.

    Raises:
        ConfigError: an unreadable or non-UTF-8 file, no root line, a malformed row, a row of 0 samples, or a
            path that leaves the root.
    """
    try:
        lines = _text_lines(path, "manifest")
    except OSError as err:
        raise ConfigError([FieldError("", f"cannot read the manifest ({err.strerror})")], str(path)) from None
    if not lines or not lines[0].strip():
        raise ConfigError([FieldError("line 1", "expected the root folder on the first line")], str(path))
    root = os.path.expanduser(lines[0].strip())
    absolute_root = os.path.isabs(root)
    if not absolute_root:
        root = os.path.join(os.path.dirname(os.path.abspath(path)), root)
    root = os.path.normpath(root)
    utts, errors = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip().isdigit():
            errors.append(FieldError(f"line {n}", f"{line!r} is not 'relative/path<TAB>num_samples'"))
            continue
        if int(parts[1]) < 1:
            errors.append(FieldError(f"line {n}", f"{parts[0]!r} has {parts[1].strip()} samples; a clip needs at least "
                                                  "1 (remove the line, or rescan the folder)"))  # fmt: skip
            continue
        try:
            _check_inside(root, parts[0], f"line {n}", absolute_root)
        except FieldError as err:
            errors.append(err)
            continue
        utts.append(Utterance(os.path.normpath(os.path.join(root, parts[0])), int(parts[1])))
    _raise_located(errors, path)
    return Manifest(root, tuple(utts))


def read_labels(path: str | os.PathLike[str], root: str | None = None) -> dict[str, str]:
    """Reads ``path<TAB>label`` lines into ``{absolute path: label}``.

    Paths are relative to ``root`` (default: the labels file's folder) and must stay inside it (an absolute
    path is accepted only inside it).

    Raises:
        OSError: the file cannot be read.
        ConfigError: a non-UTF-8 file, a malformed line, or a path that leaves ``root``.
    """
    base = root if root is not None else os.path.dirname(os.path.abspath(path))
    out: dict[str, str] = {}
    errors = []
    for n, line in enumerate(_text_lines(path, "labels file"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip():
            errors.append(FieldError(f"line {n}", f"{line!r} is not 'path<TAB>label'"))
            continue
        try:
            _check_inside(base, parts[0], f"line {n}", True)
        except FieldError as err:
            errors.append(err)
            continue
        out[os.path.normpath(os.path.join(base, parts[0]))] = parts[1].strip()
    _raise_located(errors, path)
    return out


def read_audio(path: str, sample_rate: int = 16000) -> Tensor:
    """Reads a file as a mono float32 ``(samples,)`` tensor at ``sample_rate`` (channels averaged)."""
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as err:
        raise DataError(f"{path}: cannot read audio ({err})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no audio samples; remove it from the manifest")
    if not np.isfinite(data).all():
        bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise DataError(f"{path}: sample {bad} is {data[bad][~np.isfinite(data[bad])][0]} (NaN or infinite audio cannot "
                        "be trained on); repair or remove the file")  # fmt: skip
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, sr, sample_rate)
    return wav


def fbank_features(wav: Tensor, spec: InputSpec) -> Tensor:
    """Kaldi log-mel filterbanks ``(frames, n_mels)`` of a ``(samples,)`` waveform for a features input.

    Frames follow :meth:`InputSpec.frames` (``snip_edges``: ``1 + (samples - win) // hop``); no dither, so
    features are deterministic.
    """
    from torchaudio.compliance import kaldi

    if wav.numel() < spec.win_length:
        return wav.new_zeros(0, spec.n_mels or 0)
    return kaldi.fbank(wav[None] * 32768.0, num_mel_bins=spec.n_mels, sample_frequency=spec.sample_rate,
                       frame_length=1000.0 * spec.win_length / spec.sample_rate,
                       frame_shift=1000.0 * spec.hop_length / spec.sample_rate, dither=0.0,
                       snip_edges=True, window_type="hamming")  # fmt: skip


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        waveforms: ``(B, samples)`` zero-padded audio at the recipe's rate.
        lengths: ``(B,)`` valid samples.
        paths: the files, in batch order.
        features: ``(B, frames, n_mels)`` filterbanks when the student takes features, else None.
        feature_lengths: ``(B,)`` valid frames of ``features``.
    """

    waveforms: Tensor
    lengths: Tensor
    paths: list[str]
    features: Tensor | None = None
    feature_lengths: Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def model_input(self) -> tuple[Tensor, Tensor]:
        """What the student takes, with its valid lengths: the filterbanks if it takes features, else audio."""
        if self.features is not None:
            return self.features, self.feature_lengths
        return self.waveforms, self.lengths

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on ``device`` (the same batch where they are there already)."""
        move = [self.waveforms, self.lengths, self.features, self.feature_lengths]
        if all(t is None or t.device == torch.device(device) for t in move):
            return self
        w, lens, f, fl = (None if t is None else t.to(device) for t in move)
        return dataclasses.replace(self, waveforms=w, lengths=lens, features=f, feature_lengths=fl)


def collate(waves: Sequence[Tensor], paths: Sequence[str], spec: InputSpec | None = None) -> Batch:
    """Pads waveforms (and their filterbanks for a features ``spec``) into a :class:`Batch`."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    batch = Batch(out, lengths, list(paths))
    if spec is not None and spec.kind == "features":
        feats = [fbank_features(w, spec) for w in waves]
        flens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        fb = torch.zeros(len(feats), int(flens.max()), spec.n_mels or 0)
        for i, f in enumerate(feats):
            fb[i, : f.shape[0]] = f
        batch.features, batch.feature_lengths = fb, flens
    return batch


class BatchStream:
    """An endless, deterministic, resumable stream of length-bucketed batches.

    Each epoch sorts the utterances by length (ties broken by a seeded shuffle), cuts them into batches
    holding at most ``batch_seconds`` of padded audio, and shuffles the batch order with a generator seeded
    by ``(seed, epoch)``. Utterances longer than ``max_seconds`` are cropped to a window whose offset is
    drawn from ``(seed, epoch, utterance)``.

    Args:
        manifests: manifest files.
        sample_rate: the training rate; audio is resampled to it when read. Bucketing uses the manifest's
            sample counts as they are (exact when the files are at ``sample_rate``).
        batch_seconds, max_seconds, min_seconds: see :class:`~trainers.recipe.DataConfig`.
        seed: the stream's seed.
        spec: the student's input spec (features are computed for a ``features`` input).

    Example:
        >>> stream = BatchStream(["train.tsv"], batch_seconds=60, seed=0)  # doctest: +SKIP
        >>> batch = next(stream); stream.position  # doctest: +SKIP
        (0, 1)
    """

    def __init__(self, manifests: Sequence[str], *, sample_rate: int = 16000, batch_seconds: float = 120.0,
                 max_seconds: float = 15.0, min_seconds: float = 0.0, seed: int = 0,
                 spec: InputSpec | None = None) -> None:  # fmt: skip
        utts: list[Utterance] = []
        for m in manifests:
            utts.extend(read_manifest(m).utterances)
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)
        self.batch_samples = int(batch_seconds * sample_rate)
        self.utterances = [u for u in utts if u.samples >= int(min_seconds * sample_rate)]
        if not self.utterances:
            raise DataError(f"{', '.join(manifests)}: no utterance of at least {min_seconds} s")
        self.seed = seed
        self.spec = spec
        self.epoch, self.index = 0, 0
        self._batches: list[list[int]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Utterance indices of every batch of ``epoch``, in order."""
        rng = random.Random(f"{self.seed}:{epoch}")
        ties = [rng.random() for _ in self.utterances]
        order = sorted(
            range(len(self.utterances)), key=lambda i: (min(self.utterances[i].samples, self.max_samples), ties[i])
        )
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            length = min(self.utterances[i].samples, self.max_samples)
            if cur and length * (len(cur) + 1) > self.batch_samples:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        rng.shuffle(batches)
        return batches

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, index of the next batch)``: save it to resume."""
        return self.epoch, self.index

    def seek(self, position: Sequence[int]) -> None:
        """Continues from a saved :attr:`position`."""
        self.epoch, self.index = int(position[0]), int(position[1])
        self._batches = None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def _advance(self) -> list[int]:
        """Moves past the next batch and returns its utterance indices (nothing is read)."""
        if self._batches is None:
            self._batches = self.epoch_batches(self.epoch)
        if self.index >= len(self._batches):
            self.epoch, self.index = self.epoch + 1, 0
            self._batches = self.epoch_batches(self.epoch)
        ids = self._batches[self.index]
        self.index += 1
        return ids

    def __next__(self) -> Batch:
        ids = self._advance()
        waves = [self._load(i) for i in ids]
        return collate(waves, [self.utterances[i].path for i in ids], self.spec)

    def skip(self, count: int) -> None:
        """Moves ``count`` batches ahead without reading their audio."""
        for _ in range(count):
            self._advance()

    def take(self, rank: int = 0, world_size: int = 1) -> Batch:
        """One step of a job of ``world_size`` processes: the stream's next ``world_size`` batches are the
        step's, process ``rank`` reads the ``rank``-th of them, and the stream moves past all of them.

        Every process holds the same stream (same manifests and seed), so they read different batches, the
        job consumes the one global sequence a single process would, and :attr:`position` is the same
        everywhere. ``take()`` is ``next(stream)``.

        Example:
            >>> batch = stream.take(rank=1, world_size=2)  # the stream's second batch  # doctest: +SKIP
            >>> stream.position  # doctest: +SKIP
            (0, 2)
        """
        self.skip(rank)
        batch = next(self)
        self.skip(world_size - 1 - rank)
        return batch

    def _load(self, i: int) -> Tensor:
        wav = read_audio(self.utterances[i].path, self.sample_rate)
        if wav.numel() > self.max_samples:
            rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
            start = rng.randrange(wav.numel() - self.max_samples + 1)
            wav = wav[start : start + self.max_samples]
        return wav
