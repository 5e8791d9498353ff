"""Plain helpers shared by several test modules: paths, tiny corpora, teachers and recipes, the small search
space, the mixed-compression student, the tone corpus of the CTC probe, recipe fingerprints and the
two-process launchers.

Test modules import these with ``from support import ...`` (pytest puts ``tests/`` on ``sys.path``, under both
``pytest`` and ``python -m pytest``); fixtures live in ``conftest.py``, and no test module imports another one
(``tests/test_test_imports.py`` checks that). Heavy libraries (torchaudio, soundfile, the trainers) are imported
inside the helpers that need them, so a module that only wants a path does not pay for them.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
DATA = ROOT / "tests" / "data"

# -- benchmarks ------------------------------------------------------------------------------------------


def load_benchmark(name: str):  # noqa: ANN201
    """Imports ``benchmarks/NAME.py`` as the module ``NAME``, with ``benchmarks/`` on ``sys.path`` first (as a
    script run sees it), so that its sibling imports (``from ranking import ...``) resolve."""
    import importlib.util

    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- the truth table (benchmarks/truth.py): a reduced space, a tiny table ---------------------------------

TRUTH_SPACE = ROOT / "searchspaces" / "supernet-small.yaml"
TRUTH_TINY = {"steps": 2, "qat_steps": 2, "eval_every": 1, "probe_steps": 3}  # every code path, no training to speak of
TRUTH_PLAN = {"candidates": 3, "parents": 1}  # 3 floats and the 3 variants of one of them: 12 runs


def small_truth_space(path: Path) -> Path:
    """supernet-small.yaml cut to 2 widths x 2 depths x 2 heads x 2 FFNs x 3 blocks (48 architectures), at
    ``path`` (returned)."""
    text = TRUTH_SPACE.read_text().split("study:")[0]
    for old, new in [("{choice: [16, 32, 48, 64], name: width}", "{choice: [16, 32], name: width}"),
                     ("repeat: {range: [1, 4], name: depth}", "repeat: {range: [1, 2], name: depth}"),
                     ("{choice: [1, 2, 4], name: heads}", "{choice: [1, 2], name: heads}"),
                     ("{choice: [32, 64, 128, 256], name: ffn}", "{choice: [32, 64], name: ffn}"),
                     ("{choice: [3, 7], name: kernel}", "3"),
                     ("{1: 0, 2: 1, 3: 2, 4: 3}", "{1: 0, 2: 1}")]:  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def open_tiny_truth(out: Path, space: Path, **training: int):  # noqa: ANN201
    """``truth.open_table`` of a tiny table in ``out``: the synthetic corpus (8 training utterances), a 2-step
    teacher, :data:`TRUTH_TINY` (``training`` replaces some) and :data:`TRUTH_PLAN` over ``space``."""
    truth = load_benchmark("truth")
    return truth.open_table(out, corpus="synthetic", teacher_steps=2, space=space,
                            training={**TRUTH_TINY, **training}, plan=TRUTH_PLAN, synthetic_utterances=8)  # fmt: skip


# -- training: a tiny corpus, a tiny torchaudio teacher, recipes -----------------------------------------

TINY_TA = {  # a tiny torchaudio wav2vec2_model: 10 ms frames like tiny-student.yaml, 3 layers of 48
    "extractor_conv_layer_config": [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]],
    "encoder_embed_dim": 48, "encoder_pos_conv_kernel": 8, "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 3, "encoder_num_heads": 2, "encoder_ff_interm_features": 96,
}  # fmt: skip


def write_corpus(folder: Path, seconds: list[float], rate: int = 16000, seed: int = 0) -> None:
    """Tiny synthetic utterances (chirps plus noise), some nested, some FLAC, one at 8 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for i, s in enumerate(seconds):
        sr = 8000 if i == 1 else rate
        t = np.arange(int(s * sr)) / sr
        wav = 0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t * (1 + t)) + 0.01 * rng.standard_normal(t.size)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"u{i}.{'flac' if i % 3 == 0 else 'wav'}", wav.astype(np.float32), sr)


def recipe_text(teacher: str, manifest: Path, **extra: str) -> str:
    """A 6-step distillation recipe over ``manifest`` with ``teacher`` (YAML text); ``extra`` replaces or adds
    top-level sections (YAML text each)."""
    body = {
        "teacher": teacher,
        "data": f"{{train: [{manifest}], batch_seconds: 1.0, max_seconds: 0.5, min_seconds: 0.1}}",
        "loss": "{layers: {0: 1, 1: 2}, masking: {prob: 0.5, span: 5}}",
        "optimizer": "{lr: 1.0e-3}",
        "schedule": "{warmup_ratio: 0.2}",
        "steps": "6",
        "logging": "{every: 1}",
        "checkpoint": "{every: 2, keep: 2}",
        "seed": "3",
    }
    body.update(extra)
    return "".join(f"{k}: {v}\n" for k, v in body.items())


def make_corpus(root: Path) -> Path:
    """Six utterances under ``root/audio`` and their manifest ``root/train.tsv`` (returned)."""
    from trainers import scan_folder

    write_corpus(root / "audio", [0.3, 0.4, 0.45, 0.6, 0.25, 0.5])
    manifest = root / "train.tsv"
    scan_folder(root / "audio", manifest)
    return manifest


def save_tiny_teacher(path: Path) -> Path:
    """A tiny torchaudio HuBERT (:data:`TINY_TA`, seed 0) saved as a state dict at ``path`` (returned)."""
    import torchaudio

    from trainers.teacher import TORCHAUDIO_BASE

    torch.manual_seed(0)
    torch.save(torchaudio.models.wav2vec2_model(**{**TORCHAUDIO_BASE, **TINY_TA}).state_dict(), path)
    return path


def ta_teacher_yaml(path: Path) -> str:
    """The recipe's ``teacher:`` section (flow YAML) for the tiny teacher saved at ``path``."""
    overrides = ", ".join(f"{k}: {v}" for k, v in TINY_TA.items())
    return f"{{kind: torchaudio_hubert, checkpoint: {path}, overrides: {{{overrides}}}}}"


def kill_after_first_checkpoint(arch: Path | str, recipe: Path | str, out: Path, *, sleep: float = 0.4,
                                timeout: float = 120.0) -> int:  # fmt: skip
    """Starts ``trainers.train(arch, recipe, out)`` in a fresh process, SIGKILLs it as soon as a checkpoint is
    complete, and returns that checkpoint's step.

    Each step sleeps ``sleep`` seconds, so the kill lands a few steps in, mid-run. The child gets a
    ``MASTER_PORT`` of its own (this process's DeepSpeed group may hold the one set here) and this process's
    torch thread count: the resumed half of the run is computed here, and a CPU reduction split over another
    number of threads sums in another order, which the exact comparisons after a resume would see.
    """
    from trainers import latest_checkpoint

    script = (
        "import time, planner, trainers\n"
        f"trainers.train(planner.load({str(arch)!r}), trainers.load_recipe({str(recipe)!r}), {str(out)!r},\n"
        f"               on_step=lambda step, m: time.sleep({sleep}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {
        "OMP_NUM_THREADS": str(torch.get_num_threads())
    }
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while latest_checkpoint(out) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the training process ended by itself (exit {proc.returncode})"
    ckpt = latest_checkpoint(out)
    assert ckpt is not None, f"no checkpoint in {out} within {timeout} s"
    return int(ckpt.name.split("-")[1])


# int4 + 2:4 everywhere, int8 and BiT binary inputs, BiT binary weights: the DeepSpeed tests' student
MIXED_STUDENT = (
    (DATA / "tiny-student.yaml").read_text().replace("name: tiny-student", "name: tiny-student-mixed")
    + """\
compression:  # int4 + 2:4 everywhere; layer 0's FFN also int8 inputs; layer 1's FFN BiT W1A1 (dense)
  - {layers: all, modules: [attention, ffn], weight: int4, sparsity: "2:4"}
  - {layers: 0, modules: [ffn], activation: int8}
  - {layers: 1, modules: [ffn], weight: binary, activation: binary, sparsity: none}
"""
)

# -- two processes on the CPU: torchrun and the deepspeed launcher ---------------------------------------

JOB = ROOT / "tests" / "_train_job.py"


def launch_env() -> dict[str, str]:
    """This environment without a process group of its own (DeepSpeed tests in this process set one)."""
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def planner_script() -> list[str]:
    """What ``$(which planner)`` names where the package is installed (a Python script), else the module."""
    script = Path(sysconfig.get_path("scripts")) / "planner"
    return [str(script)] if script.is_file() else ["--module", "planner.cli"]


def two_processes(launcher: str, *args: str, job: bool = False) -> list[str]:
    """Two processes of ``planner train ARGS`` (``job``: of tests/_train_job.py ARGS) under ``launcher``."""
    if launcher == "torchrun":
        target = [str(JOB)] if job else ["-m", "planner.cli", "train"]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target, *args]
    target = [str(JOB)] if job else [*planner_script(), "train"]
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
            *target, *args]  # fmt: skip


def launch(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` from the repository root in :func:`launch_env` (its process group killed after ``timeout``
    seconds, which fails the test); stderr is merged into stdout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} ran over {timeout} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def launch_ok(cmd: list[str]) -> str:
    """:func:`launch` that must exit 0; returns its output."""
    result = launch(cmd)
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


# -- search: the small capacity-evaluated space ----------------------------------------------------------

SMALL = """
format: 1
name: tiny
width: {choice: [64, 96], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[32, 10, 5], "2 x [32, 3, 2]"]
    projection: true
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: {range: [1, 4]}
    heads: {choice: [2, 4]}
    ffn: {range: [64, 256], step: 64}
study:
  name: tiny
  objectives: [{metric: params}, {metric: macs, direction: minimize}]
  budgets: {params: 300000}
  sampler: {kind: tpe, n_startup_trials: 4}
  n_trials: 8
  seed: 3
  evaluator: capacity
"""


def run_study(space: Path, storage: str, **kw):  # noqa: ANN003, ANN201
    """``run_search(space)`` into ``storage`` without a progress bar; ``kw`` are further SearchOptions."""
    from planner.search import SearchOptions, run_search

    return run_search(str(space), SearchOptions(storage=storage, progress=False, **kw))


# -- the CTC probe: "spelled" utterances, one tone per character -----------------------------------------

ALPHABET = "abc "
TONES = {"a": 500.0, "b": 1200.0, "c": 2600.0, " ": 4200.0}  # Hz, one per character


def tone_utterance(text: str, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """80 ms of a character's tone (Hann-shaped) per character, 40 ms of near-silence around each."""
    t = np.arange(1280) / rate
    parts = [np.zeros(640)]
    for ch in text:
        parts += [0.4 * np.sin(2 * np.pi * TONES[ch] * t) * np.hanning(t.size), np.zeros(640)]
    wav = np.concatenate(parts)
    return (wav + 0.005 * rng.standard_normal(wav.size)).astype(np.float32)


def write_tone_corpus(folder: Path, prefix: str, n: int, seed: int) -> list[tuple[str, str]]:
    """Writes ``n`` utterances of one or two random words over ``abc``; returns ``(file name, transcript)``."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    pick, rng = random.Random(seed), np.random.default_rng(seed)
    rows = []
    for i in range(n):
        text = " ".join(
            "".join(pick.choice("abc") for _ in range(pick.randint(1, 3))) for _ in range(pick.randint(1, 2))
        )
        sf.write(folder / f"{prefix}{i}.wav", tone_utterance(text, rng), 16000)
        rows.append((f"{prefix}{i}.wav", text))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Writes ``rows`` as tab-separated lines at ``path`` (returned)."""
    path.write_text("".join(f"{p}\t{t}\n" for p, t in rows))
    return path


# -- recipe fingerprints -----------------------------------------------------------------------------------

WAV2VEC2_TEACHER = "teacher: {kind: torchaudio_wav2vec2, checkpoint: t.pt, overrides: {encoder_num_layers: 2, encoder_embed_dim: 64, encoder_layer_drop: 0.1}}\n"
# Each fingerprint below is what the code before the loss and teacher kinds computed for the same recipe
# (runs/…/run.json holds it): a run started then still resumes.
FINGERPRINTS = [
    (WAV2VEC2_TEACHER + "data: {train: [a.tsv], valid: v.tsv}\nengine: deepspeed\ndeepspeed: {zero_stage: 2, precision: bf16}\nsteps: 7\n",
     "4bee7d8613de7ff4"),
    ("teacher: {kind: architecture, arch: x.yaml, checkpoint: c.pt}\ndata: {train: a.tsv}\nloss: {layers: {0: 1, 2: 3}, "
     "weights: [0.5, 1], distance: l1_cosine, cosine_weight: 0.5, masking: {prob: 0.4, prob_end: 0.8, schedule: linear}}\n"
     "schedule: {kind: cosine, final_ratio: 0.1}\n", "9e8a99d63da650fd"),
    ("data: {train: a.tsv, labels: l.tsv}\nloss: {kind: classification, classes: [x, y, z]}\ninit: i.pt\n"
     "optimizer: {lr: 0.001, fused: false, clip_norm: null}\n", "ff288b11e3a77e5f"),
    ("teacher: {kind: self, checkpoint: f.pt}\ndata: {train: a.tsv, labels: l.tsv}\nloss: {kind: ctc, alphabet: abc, "
     "distill_weight: 0.3, layers: proportional}\ncompression: {schedule: few_shot, steps: 5, sr_ste: 0.0002}\nseed: 7\n",
     "7a47eea131b31dad"),
    ("teacher: {kind: torchaudio_hubert, checkpoint: t.pt, overrides: {extractor_conv_layer_config: [[32, 10, 5], [32, 3, 2]], "
     "encoder_num_layers: 2}}\ndata: {train: a.tsv}\n", "549b62eb7f485629"),
]  # fmt: skip


# -- the supernet: a tiny space (width x depth x block x kernel x weight bits x 2:4) and its study -----------

SUPERNET_SPACE = """format: 1
name: tiny-super
input: {kind: waveform, sample_rate: 16000}
width: {choice: [16, 32], name: width}
frontend:
  - {kind: conv_extractor, conv_layers: [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]], output_norm: true, projection: true}
  - kind: mask_embedding
  - {kind: conv_pos_embedding, kernel: 8, groups: 4}
  - kind: layer_norm
layers:
  - choice:
      - {kind: transformer}
      - {kind: conformer, kernel: {choice: [3, 5], name: kernel}}
    name: block
    repeat: {range: [1, 2], name: depth}
    heads: {choice: [1, 2], name: heads}
    ffn: {choice: [16, 32], name: ffn}
heads:
  - {kind: projection_heads, width: 48, layers: {ref: depth, map: {1: 0, 2: 1}}}
compression:
  - layers: layers
    modules: [attention, ffn, pointwise]
    weight: {choice: [fp32, int8], name: weight_bits}
    sparsity: {choice: [none, "2:4"], name: sparsity}
study:
  name: tiny-super
  objectives: [{metric: supernet_loss}, {metric: params, direction: minimize}]
  budgets: {params: BUDGET}
  sampler: {kind: random}
  n_trials: 6
  seed: 0
  evaluator: {kind: supernet, checkpoint: CKPT, recipe: RECIPE}
"""


def supernet_setup(root: Path, steps: int = 6) -> dict[str, Path]:
    """Six utterances, the tiny teacher, a supernet recipe (``steps`` steps, sandwich of 3) and the space
    (without its study section) under ``root``; returns their paths (``recipe``, ``space``, ``distill``: a
    2-step distillation recipe for a Pareto point)."""
    manifest = make_corpus(root)
    teacher = ta_teacher_yaml(save_tiny_teacher(root / "teacher.pt"))
    data = f"{{train: [{manifest}], valid: {manifest}, batch_seconds: 1.0, max_seconds: 0.5, min_seconds: 0.1}}"
    recipe = root / "super.yaml"
    recipe.write_text(recipe_text(teacher, manifest, data=data, steps=str(steps),
                                  loss="{layers: proportional, masking: {prob: 0.5, span: 3}}",
                                  supernet="{random: 1, cover: 8, recalibrate: 1}", logging="{every: 2}"))  # fmt: skip
    space = root / "space.yaml"
    space.write_text(SUPERNET_SPACE.split("study:")[0])
    distill = root / "distill.yaml"
    distill.write_text(recipe_text(teacher, manifest, data=data, loss="{layers: proportional}", steps="2"))
    return {"root": root, "recipe": recipe, "space": space, "distill": distill}
