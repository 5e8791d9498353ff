"""The setup of a truth table (truth.py): its corpus, its teacher and its recipes, made once and reused.

Files in the output folder ``OUT`` (all but ``corpus/`` are committed with the table):

    setup.json               {"type": "planner-truth-setup", "format": 1, "corpus": {...}, "teacher": {...},
                             "training": {...}, "plan": {...}}; written last, so its presence means the rest is there
    teacher.yaml             the teacher's architecture (word_teacher.TEACHER)
    teacher.pt               its weights: a state dict, torch.load(..., weights_only=True)
    teacher-classifier.pt    its word classifier (nn.Linear state dict: weight (classes, 64), bias)
    teacher-recipe.yaml      how it was trained (planner train teacher.yaml --recipe teacher-recipe.yaml)
    teacher-metrics.jsonl    its training log
    distill.yaml             the students' recipe: masking distillation from teacher.yaml / teacher.pt
                             (loss.layers is set per candidate: its last layer onto the teacher's last)
    qat.yaml                 the compressed variants' recipe: distill.yaml at a tenth of the rate, with the
                             compression schedule (init: the float parent's weights, per candidate)
    .gitignore               corpus/, weights/ and scratch: what the folder holds that the table is not
    corpus/                  audio/{train,held,real}/*.wav (16 kHz), train.tsv / valid.tsv / real.tsv
                             (manifests, root lines relative), labels.tsv / valid-labels.tsv / real-labels.tsv
                             (name<TAB>word, relative to each manifest's root); NOT committed: re-made when
                             missing, and every file's sha256 must then equal setup.json's corpus.files

``setup.json``'s ``corpus``: kind (espeak or synthetic), words, voices, speeds, espeak-ng's version, the real
speakers, utterances and seconds per set, ``files`` (path under corpus/ -> sha256). ``teacher``: its files,
params, layers, steps, seed, held-out accuracy of its own classifier on the held-out voices
(``held_out_accuracy``) and on the real recordings (``real_accuracy``), chance, seconds. ``training`` and
``plan``: the settings the table's runs use (see truth.py); a later call with other settings is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from corpus import (
    HELD_OUT_VOICES,
    RATE,
    SPEEDS,
    TRAIN_VOICES,
    WORDS,
    copy_real_digits,
    file_hashes,
    synthesize_speech,
    synthesize_tones,
    write_manifest,
    write_rows,
)
from word_teacher import classifier_accuracy, train_teacher

from planner.errors import ConfigError, FieldError
from planner.files import write_text_atomic
from trainers import load_recipe
from trainers.data import read_labels, read_manifest
from trainers.recipe import Recipe
from trainers.teacher import Teacher, load_teacher

__all__ = ["SETUP_TYPE", "CorpusKind", "TruthSetup", "corpus_labels", "ensure_setup", "read_setup", "table_space"]

ROOT = Path(__file__).resolve().parents[1]  # the checkout: a table's space is named relative to it

SETUP_TYPE = "planner-truth-setup"
SETUP_FORMAT = 1
CorpusKind = Literal["espeak", "synthetic"]
BATCH_SECONDS = 4.0  # padded audio per batch, as proxy_rank.py
SETS = ("train", "held", "real")  # the corpus's sets: training voices, held-out voices, real recordings
_MANIFEST = {"train": "train.tsv", "held": "valid.tsv", "real": "real.tsv"}
_LABELS = {"train": "labels.tsv", "held": "valid-labels.tsv", "real": "real-labels.tsv"}
# what the table's folder holds that is not part of the table (re-made, or the runs' scratch)
_IGNORED = "# not part of the table: re-made from setup.json, or scratch (benchmarks/truth_setup.py)\n" + "".join(
    f"/{p}\n" for p in ("corpus/", ".corpus.tmp/", "teacher-run/", "weights/", ".setup.lock")
)


@dataclass(frozen=True)
class TruthSetup:
    """A loaded setup: the folder, ``setup.json``, the base distillation recipe and the loaded teacher.

    Attributes:
        out: the output folder.
        info: ``setup.json``'s content.
        recipe: ``distill.yaml`` (its ``loss.layers`` unset).
        teacher: the frozen teacher.
        labels: per set (:data:`SETS`), ``{absolute audio path: word}``; ``real`` is empty without recordings.
    """

    out: Path
    info: dict[str, Any]
    recipe: Recipe
    teacher: Teacher
    labels: dict[str, dict[str, str]]

    @property
    def classes(self) -> list[str]:
        """The words of the training set, sorted: the probe's classes."""
        return sorted(set(self.labels["train"].values()))


def _espeak_version() -> str | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip() or None


def _make_corpus(folder: Path, kind: CorpusKind, synthetic_utterances: int) -> dict[str, Any]:
    """Writes the corpus into the empty ``folder``; returns its description (without the file hashes)."""
    audio = {s: folder / "audio" / s for s in SETS}
    if kind == "espeak":
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise ConfigError([FieldError("corpus", "espeak needs espeak-ng (apt-get install -y espeak-ng)")])
        rows = {"train": synthesize_speech(audio["train"], TRAIN_VOICES, SPEEDS, WORDS, exe),
                "held": synthesize_speech(audio["held"], HELD_OUT_VOICES, SPEEDS, WORDS, exe),
                "real": copy_real_digits(audio["real"], WORDS)}  # fmt: skip
        info: dict[str, Any] = {"kind": kind, "words": list(WORDS), "train_voices": list(TRAIN_VOICES),
                                "held_out_voices": list(HELD_OUT_VOICES), "speeds": list(SPEEDS),
                                "espeak": _espeak_version(), "max_seconds": 1.0}  # fmt: skip
    else:
        rows = {"train": synthesize_tones(audio["train"], synthetic_utterances, 4, seed=0),
                "held": synthesize_tones(audio["held"], max(synthetic_utterances // 2, 4), 4, seed=1), "real": []}  # fmt: skip
        info = {"kind": kind, "words": [f"band{c}" for c in range(4)], "max_seconds": 0.5}
    for s in SETS:
        if rows[s]:
            write_manifest(folder / _MANIFEST[s], audio[s], rows[s])
            write_rows(folder / _LABELS[s], rows[s])
    info["real_speakers"] = sorted({name.rsplit("-", 1)[0] for name, _ in rows["real"]})
    for s in SETS:
        info[f"{s}_utterances"] = len(rows[s])
        info[f"{s}_seconds"] = round(_samples(folder / _MANIFEST[s]) / RATE, 1) if rows[s] else 0.0
    return info


def _samples(manifest: Path) -> int:
    return sum(u.samples for u in read_manifest(manifest).utterances)


def corpus_labels(corpus: Path) -> dict[str, dict[str, str]]:
    """Per set, ``{absolute audio path: word}`` of the corpus folder (empty for a set it does not have)."""
    out = {}
    for s in SETS:
        manifest = corpus / _MANIFEST[s]
        out[s] = read_labels(corpus / _LABELS[s], read_manifest(manifest).root) if manifest.is_file() else {}
    return out


def _check_corpus(out: Path, info: dict[str, Any], synthetic_utterances: int, log: Any) -> None:
    """Re-makes ``corpus/`` when it is missing; its files must hash as ``setup.json`` says.

    Raises:
        ConfigError: ``setup.json: corpus.files: ...`` when a file differs, is missing or is extra.
    """
    corpus = out / "corpus"
    want = info["corpus"]["files"]
    if not corpus.is_dir():
        if log is not None:
            print(f"{corpus}: missing; re-making it ({info['corpus']['kind']})", file=log, flush=True)
        staging = out / ".corpus.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _make_corpus(staging, info["corpus"]["kind"], synthetic_utterances)
        _compare(out, file_hashes(staging), want, info, remade=True)
        os.replace(staging, corpus)
        return
    _compare(out, file_hashes(corpus), want, info, remade=False)


def _compare(out: Path, have: dict[str, str], want: dict[str, str], info: dict[str, Any], remade: bool) -> None:
    differ = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    if not (differ or missing or extra):
        return
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in (("differ", differ), ("missing", missing),
                                                               ("extra", extra)) if v]  # fmt: skip
    how = (f"re-made with {info['corpus'].get('espeak') or 'this machine'}, not the corpus of this table "
           f"(made with {info['corpus'].get('espeak') or 'its recorded tools'}): synthesize it where the table was "
           "made and copy corpus/ here, or start a new table in another --out") if remade else (
           "corpus/ was changed after the table was made: delete corpus/ to have it re-made")  # fmt: skip
    raise ConfigError([FieldError("corpus.files", f"{'; '.join(parts)} of corpus/: {how}")], str(out / "setup.json"))


def _recipes(out: Path, kind: CorpusKind, max_seconds: float, settings: dict[str, Any]) -> None:
    """Writes ``distill.yaml`` and ``qat.yaml`` (relative paths: they are read from ``out``)."""
    t = settings
    data = (f"{{train: [corpus/train.tsv], valid: corpus/valid.tsv, batch_seconds: {BATCH_SECONDS}, "
            f"max_seconds: {max_seconds}, min_seconds: 0.1}}")  # fmt: skip
    head = (f"# the production recipe of the truth table ({kind} corpus), benchmarks/truth.py: masking distillation\n"
            "# from the word teacher; loss.layers is set per candidate (its last layer onto the teacher's last)\n")  # fmt: skip
    body = ("teacher: {kind: architecture, arch: teacher.yaml, checkpoint: teacher.pt}\n"
            f"data: {data}\nloss: {{masking: {{prob: 0.5, span: 3}}}}\n")  # fmt: skip
    write_text_atomic(out / "distill.yaml", head + body + f"optimizer: {{lr: {t['lr']}}}\n"
                      "schedule: {warmup_ratio: 0.1}   # linear\n"
                      f"steps: {t['steps']}\nseed: {t['seeds'][0]}   # and each of training.seeds\n")  # fmt: skip
    write_text_atomic(out / "qat.yaml", "# the compressed variants (benchmarks/truth.py): the same distillation, "
                      "started from the float parent's weights\n# (init: weights/<parent>-s<seed>.pt, set per run), "
                      "with the architecture's quantizers and N:M masks active\n" + body +
                      f"compression: {{schedule: few_shot, steps: {t['qat_steps'] // 2}}}   # masks frozen after half\n"
                      f"optimizer: {{lr: {t['qat_lr']}}}\nschedule: {{warmup_ratio: 0.1}}\n"
                      f"steps: {t['qat_steps']}\nseed: {t['seeds'][0]}\n")  # fmt: skip


def _create(out: Path, kind: CorpusKind, teacher_steps: int, settings: dict[str, Any], plan: dict[str, Any],
            synthetic_utterances: int, log: Any) -> None:  # fmt: skip
    """Makes the corpus, trains the teacher, writes the recipes and (last) ``setup.json``."""
    t0 = time.perf_counter()
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    cinfo = _make_corpus(corpus, kind, synthetic_utterances)
    cinfo["synthesis_s"] = round(time.perf_counter() - t0, 1)
    cinfo["files"] = file_hashes(corpus)

    t1 = time.perf_counter()
    data = (f"{{train: [corpus/train.tsv], valid: corpus/valid.tsv, batch_seconds: {BATCH_SECONDS}, "
            f"max_seconds: {cinfo['max_seconds']}, min_seconds: 0.1, labels: corpus/labels.tsv, "
            "valid_labels: corpus/valid-labels.tsv}")  # fmt: skip
    run = out / "teacher-run"
    shutil.rmtree(run, ignore_errors=True)
    graph, result = train_teacher(out, data, teacher_steps, seed=0, log=log, run=run.name)
    shutil.copyfile(run / "student.pt", out / "teacher.pt")
    shutil.copyfile(run / "classifier.pt", out / "teacher-classifier.pt")
    shutil.copyfile(run / "metrics.jsonl", out / "teacher-metrics.jsonl")
    shutil.rmtree(run)  # its checkpoints (optimizer state) are not part of the table
    labels = corpus_labels(corpus)
    classes = sorted(set(labels["train"].values()))

    def accuracy(s: str) -> float | None:
        if not labels[s]:
            return None
        rows = [(os.path.relpath(p, corpus), w) for p, w in labels[s].items()]
        acc = classifier_accuracy(graph, out / "teacher.pt", out / "teacher-classifier.pt", rows, corpus, classes)
        return round(acc, 4)

    last = result.metrics[-1] if result.metrics else {}
    tinfo = {"arch": "teacher.yaml", "weights": "teacher.pt", "classifier": "teacher-classifier.pt",
             "recipe": "teacher-recipe.yaml", "metrics": "teacher-metrics.jsonl", "name": graph.name,
             "params": graph.param_count, "layers": len(graph.nodes("layers")), "steps": teacher_steps, "seed": 0,
             "train_accuracy_last_batch": last.get("accuracy"), "held_out_accuracy": accuracy("held"),
             "real_accuracy": accuracy("real"), "chance": round(1 / len(classes), 4),
             "train_s": round(time.perf_counter() - t1, 1)}  # fmt: skip
    _recipes(out, kind, cinfo["max_seconds"], settings)
    info = {"type": SETUP_TYPE, "format": SETUP_FORMAT, "corpus": cinfo, "teacher": tinfo, "recipe": "distill.yaml",
            "qat_recipe": "qat.yaml", "training": settings, "plan": plan}  # fmt: skip
    write_text_atomic(out / "setup.json", json.dumps(info, indent=1) + "\n")


def _read_setup(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            [FieldError("", f"unreadable ({err}); delete it to make the setup again")], str(path)
        ) from None
    if not isinstance(info, dict) or info.get("type") != SETUP_TYPE or info.get("format") != SETUP_FORMAT:
        raise ConfigError([FieldError("type", f"not a {SETUP_TYPE} of format {SETUP_FORMAT}")], str(path))
    return info


def _check_same(path: Path, section: str, saved: dict[str, Any], given: dict[str, Any]) -> None:
    """Every setting of ``given`` equals the table's (``saved``); else the fields that differ, with the fix."""
    errors = [FieldError(f"{section}.{k}", f"the table was made with {saved.get(k)!r}, this call asks for {v!r}: "
                                           f"ask for {saved.get(k)!r} (or leave the option out), or use another --out")
              for k, v in given.items() if saved.get(k) != v]  # fmt: skip
    if errors:
        raise ConfigError(errors, str(path))


def ensure_setup(out: str | os.PathLike[str], *, corpus: CorpusKind = "espeak", teacher_steps: int = 1000,
                 settings: dict[str, Any], plan: dict[str, Any], synthetic_utterances: int = 48,
                 log: Any = None) -> TruthSetup:  # fmt: skip
    """Loads the setup of ``out``, making it first when ``setup.json`` is not there (under a lock, once).

    Args:
        out: the table's folder.
        corpus: ``espeak`` (speech, and the real recordings when installed) or ``synthetic`` (chirps; tests).
        teacher_steps: the teacher's classification steps (a new setup only).
        settings: the runs' settings (``training`` in setup.json); an existing setup must have the same.
        plan: the candidate plan's settings (``plan``); the same rule.
        synthetic_utterances: training utterances of the synthetic corpus.
        log: progress lines (None: silent).

    Raises:
        ConfigError: ``setup.json: field: ...`` when the settings, the corpus kind or the corpus files differ
            from the table's.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / ".gitignore", _IGNORED)
    path = out / "setup.json"
    with open(out / ".setup.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then loads what the first made
        if not path.is_file():
            _create(out, corpus, teacher_steps, settings, plan, synthetic_utterances, log)
        info = _read_setup(path)
        _check_same(path, "corpus", info["corpus"], {"kind": corpus})
        _check_same(path, "training", info["training"], settings)
        _check_same(path, "plan", info["plan"], plan)
        _check_corpus(out, info, synthetic_utterances, log)
    recipe = load_recipe(out / "distill.yaml")
    return TruthSetup(out, info, recipe, load_teacher(recipe), corpus_labels(out / "corpus"))


def read_setup(out: str | os.PathLike[str]) -> TruthSetup:
    """Loads the setup of the table in ``out`` without writing anything there (a reader of a table that other
    processes are generating: ``supernet_rank.py``); its corpus must hash as ``setup.json`` says.

    Raises:
        ConfigError: ``OUT: ...`` without ``setup.json``; ``setup.json: corpus...`` when ``corpus/`` is missing or
            differs (``truth.py --out OUT --setup-only`` re-makes a missing one).
    """
    out = Path(out)
    path = out / "setup.json"
    if not path.is_file():
        raise ConfigError([FieldError("", "no setup.json: not a truth table (make one with benchmarks/truth.py "
                                          "--out OUT --setup-only)")], str(out))  # fmt: skip
    info = _read_setup(path)
    corpus = out / "corpus"
    if not corpus.is_dir():
        raise ConfigError([FieldError("corpus", f"{corpus} is missing: re-make it with benchmarks/truth.py --out "
                                                f"{out} --setup-only")], str(path))  # fmt: skip
    _compare(out, file_hashes(corpus), info["corpus"]["files"], info, remade=False)
    recipe = load_recipe(out / "distill.yaml")
    return TruthSetup(out, info, recipe, load_teacher(recipe), corpus_labels(corpus))


def table_space(setup: TruthSetup) -> Path:
    """The table's space file in this checkout; its sha256 must be the table's.

    Raises:
        ConfigError: ``setup.json: plan.space_sha256: ...`` when the file differs from the one the table used.
    """
    plan = setup.info["plan"]
    path = Path(plan["space"]) if os.path.isabs(plan["space"]) else ROOT / plan["space"]
    text = path.read_bytes() if path.is_file() else None
    if text is None or hashlib.sha256(text).hexdigest() != plan["space_sha256"]:
        raise ConfigError([FieldError("plan.space_sha256", f"{path} is {'missing' if text is None else 'not the space'} "
                                                           "the table's candidates were drawn from: check out the "
                                                           "commit the table was made at")],
                          str(setup.out / "setup.json"))  # fmt: skip
    return path
