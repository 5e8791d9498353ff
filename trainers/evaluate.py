"""``evaluate``: a downstream linear probe on a trained run's frozen features (``planner evaluate``).

Task file (``TASK.yaml``; relative paths against its folder; unknown keys are errors)::

    format: 1
    kind: classification    # or ctc: the labels are transcripts
    train: train.tsv        # path<TAB>label per line (paths relative to the TSV's folder)
    test: test.tsv          # held out: accuracy (classification) or CER/WER (ctc) is reported on it
    features: weighted_sum  # or last (the encoder output)
    alphabet: " abc...z'"   # ctc only: the characters (default: the training loss's default)
    steps: 300              # Adam steps of the linear probe
    lr: 1.0e-2
    batch_size: 32
    seed: 0

Features: each utterance is run alone through the frozen encoder (eval mode, compression as trained), so a
feature never depends on which other utterances share a batch (activation quantizers with dynamic ranges
would see padding); the probe reads either the encoder output or a softmax-weighted sum of every layer's
hidden state and the output (SUPERB's weighted sum; weights learned with the probe).

* ``classification``: hidden states are mean-pooled over the utterance (pooling then weighting equals
  weighting then pooling), standardised with the training set's mean and deviation, and a linear
  classifier is trained with cross-entropy. ``chance`` is the held-out rate of the most frequent class.
* ``ctc``: hidden states stay per frame, standardised per layer and dimension with the training frames'
  statistics; the probe is a linear layer frames x ``len(alphabet) + 1`` (blank 0) trained with
  ``torch.nn.functional.ctc_loss`` on padded minibatches (padding excluded through the lengths), then
  greedy CTC decoding of the held-out set (:mod:`trainers.ctc`) gives ``cer`` and ``wer``. Baselines no
  probe of silence can beat: ``baseline_cer`` / ``baseline_wer`` (the empty transcript: exactly 1.0) and
  ``prior_cer`` / ``prior_wer`` (the most frequent training transcript for every test utterance).
  Transcripts are lower-cased; a character outside ``alphabet`` is an error naming the TSV line. The
  frames of the whole training set are held in memory (frames x layers x width floats): a probe-sized
  set, minutes to a few hours of audio.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from planner.compress import load_packed, materialize
from planner.config import from_data, read_yaml
from planner.errors import ConfigError, FieldError, PlannerError
from planner.ir.io import load
from trainers.ctc import encode, error_rates, greedy_decode
from trainers.data import collate, read_audio, read_labels
from trainers.engine import read_deepspeed_checkpoint
from trainers.recipe import DEFAULT_ALPHABET
from trainers.safeio import read_torch
from trainers.task import mean_pool
from trainers.train import latest_checkpoint

__all__ = [
    "ProbeTask",
    "classification_probe",
    "decode_files",
    "evaluate",
    "export_run",
    "load_task",
    "load_run_model",
    "probe_model",
    "run_task_head",
]


_EXAMPLES = 5  # decoded held-out utterances shown in a ctc result
_CEILINGS = {"steps": 10_000_000, "batch_size": 65_536, "sample_rate": 1_000_000, "max_seconds": 86_400.0}


@dataclass(frozen=True)
class ProbeTask:
    """A linear-probe task (see the module docstring). ``base_dir`` anchors relative paths.

    Attributes:
        train, test: ``path<TAB>label`` TSVs (a class name, or a transcript for ``ctc``).
        kind: ``classification`` or ``ctc``.
        features: ``weighted_sum`` (every layer, softmax weights learned with the probe) or ``last``.
        alphabet: the CTC characters (``ctc`` only; default :data:`~trainers.recipe.DEFAULT_ALPHABET`).
        steps, lr, weight_decay, batch_size: the probe's Adam training.
        sample_rate, max_seconds: audio is resampled to this rate and cut to this length.
        seed: the probe's initialisation and minibatch order.
    """

    train: str
    test: str
    kind: Literal["classification", "ctc"] = "classification"
    features: Literal["weighted_sum", "last"] = "weighted_sum"
    alphabet: str | None = None
    steps: int = 300
    lr: float = 1.0e-2
    weight_decay: float = 0.0
    batch_size: int = 32
    sample_rate: int = 16000
    max_seconds: float = 15.0
    seed: int = 0
    format: int = 1

    def check(self) -> None:
        if self.format != 1:
            raise FieldError("format", f"{self.format} is not a supported task format (this planner reads 1)")
        for name in ("steps", "batch_size", "sample_rate"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)} must be positive")
        for name in ("lr", "max_seconds"):
            if not getattr(self, name) > 0:
                raise FieldError(name, f"{getattr(self, name)} must be positive")
        for name, ceiling in _CEILINGS.items():  # absurd sizes refused before any audio is read
            if not getattr(self, name) <= ceiling:
                raise FieldError(name, f"{getattr(self, name)} exceeds the ceiling of {ceiling:,}")
        if not self.weight_decay >= 0:
            raise FieldError("weight_decay", f"{self.weight_decay} must be at least 0")
        if not 0 <= self.seed < 2**63:
            raise FieldError("seed", f"{self.seed} is not a seed (allowed: 0 to 2**63 - 1)")
        if self.alphabet is not None and self.kind != "ctc":
            raise FieldError("alphabet", f"only allowed with kind: ctc (this task is {self.kind})")
        if self.alphabet is not None and (not self.alphabet or len(set(self.alphabet)) != len(self.alphabet)):
            raise FieldError("alphabet", f"{self.alphabet!r} must be non-empty characters, each once")

    @property
    def characters(self) -> str:
        """The CTC alphabet in effect (``alphabet``, else the default)."""
        return self.alphabet if self.alphabet is not None else DEFAULT_ALPHABET


def load_task(path: str | os.PathLike[str]) -> tuple[ProbeTask, Path]:
    """Loads and validates a task file; returns it and its folder.

    Raises:
        ConfigError: ``TASK.yaml: field: problem`` (unknown keys included).
    """
    try:
        task = from_data(ProbeTask, read_yaml(Path(path)))
    except FieldError as err:
        raise ConfigError([err], str(path)) from None
    return task, Path(path).resolve().parent


def load_run_model(run: str | os.PathLike[str], checkpoint: str | None = None) -> tuple[Any, nn.Module]:
    """The run's architecture and its trained encoder (``student.pt``, else the newest checkpoint), in eval mode.

    ``run`` may also be the run's ``best/`` folder (its held-out best weights) or a packed export (loaded
    with :func:`planner.load_packed`, its task head on ``model.task_head``).

    Every file is read as data (``weights_only=True``; DeepSpeed's records allowlisted, see
    :mod:`trainers.safeio`): a pickle planted in the run folder is refused, never run.

    Raises:
        PlannerError: not a run folder, or weights that do not fit its architecture.
        CheckpointError: a weights file that cannot be read as data.
    """
    run = Path(run)
    if (run / "manifest.json").is_file() and not (run / "arch.yaml").exists() and checkpoint is None:
        model = load_packed(run)  # a packed export (planner export): its weights as trained
        return model.graph, model
    run, weights = _run_folders(run)
    if checkpoint is None and weights != run:
        checkpoint = str(weights / "student.pt")
    if not (run / "arch.yaml").is_file():
        raise PlannerError(f"{run}: not a training run (no arch.yaml) nor a packed export (no manifest.json)")
    graph = load(run / "arch.yaml")
    model = materialize(graph)
    if checkpoint is not None:
        state = read_torch(checkpoint, what="a state dict")
    elif (run / "student.pt").is_file():
        state = read_torch(run / "student.pt", what="the run's student state dict")
    else:
        ckpt = latest_checkpoint(run)
        if ckpt is not None and (ckpt / "state").is_dir():  # a DeepSpeed checkpoint (ZeRO: consolidated in fp32)
            state = read_deepspeed_checkpoint(ckpt)
        elif ckpt is None or not (ckpt / "engine.pt").is_file():
            raise PlannerError(f"{run}: no student.pt and no torch-engine or DeepSpeed checkpoint to evaluate")
        else:
            engine = read_torch(ckpt / "engine.pt", what="the torch engine's state")
            state = engine.get("model") if isinstance(engine, dict) else None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PlannerError(f"{run}: the weights to evaluate are not a state dict (names to tensors)")
    if any(k.startswith("student.") for k in state):  # a TaskModel's state: the encoder part
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PlannerError(f"{run}: the weights do not fit {graph.name} ({err})") from err
    return graph, model.eval()


def _run_folders(path: Path) -> tuple[Path, Path]:
    """``(run folder, folder of the weights)``: a run's ``best/`` has its run above it."""
    if (path / "best.json").is_file() and (path.parent / "arch.yaml").is_file():
        return path.parent, path
    return path, path


def run_task_head(run: str | os.PathLike[str]) -> Any:
    """The task head a run trained (:class:`planner.compress.TaskHead`), None for a distillation run.

    Read as data from the run's (or its ``best/``'s) ``task.json`` and, for ``classification``,
    ``classifier.pt`` (``weights_only``).

    Raises:
        PlannerError: a task run without ``task.json`` (written by ``planner train`` since it records the
            head), or a ``task.json`` / ``classifier.pt`` that is not what train writes.
    """
    import json

    from planner.compress import CompressionError, TaskHead

    run, weights = _run_folders(Path(run))
    path = weights / "task.json"
    if not path.is_file():
        kind = None
        if (run / "recipe.yaml").is_file():
            data = read_yaml(run / "recipe.yaml")
            loss = data.get("loss") if isinstance(data, dict) else None
            kind = loss.get("kind") if isinstance(loss, dict) else None
        if kind in ("classification", "ctc") or (weights / "classifier.pt").exists():
            raise PlannerError(f"{path}: missing; this {kind or 'task'} run predates task.json (the head's classes or "
                               "alphabet): train it again with this planner, or export the encoder alone with "
                               f"`planner export {run / 'arch.yaml'} --checkpoint {weights / 'student.pt'}`")  # fmt: skip
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("type") != "planner-task-head":
            raise ValueError("not a planner-task-head object")
    except (OSError, ValueError) as err:
        raise PlannerError(f"{path}: unreadable ({err})") from None
    try:
        if info.get("kind") == "ctc":
            return TaskHead("ctc", alphabet=info.get("alphabet"))
        state = read_torch(weights / "classifier.pt", what="the run's classifier")
        if not isinstance(state, dict) or set(state) != {"weight", "bias"} or state["weight"].dim() != 2:
            raise PlannerError(f"{weights / 'classifier.pt'}: not a linear classifier's state dict (weight, bias)")
        linear = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        linear.load_state_dict(state)
        return TaskHead(str(info.get("kind")), classes=info.get("classes"), classifier=linear)
    except (CompressionError, RuntimeError) as err:
        raise PlannerError(f"{path}: {err}") from None


def export_run(run: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Packs a run's trained model with the task head it trained (``planner export RUN --out DIR``).

    Args:
        run: a run folder (its final weights) or its ``best/`` folder (the held-out best).
        out_dir: the packed directory (see :func:`planner.compress.export`).
        force: replace a non-empty ``out_dir``.

    Returns:
        the manifest (``manifest["task"]``: the head's kind and classes or alphabet, for a task run).

    Example:
        >>> export_run("runs/qat", "packed/")["task"]["kind"]  # doctest: +SKIP
        'classification'
    """
    from planner.compress import export

    graph, model = load_run_model(run)
    return export(model, graph, out_dir, force=force, task=run_task_head(run))


def decode_files(source: str | os.PathLike[str], wavs: list[str]) -> list[dict[str, Any]]:
    """Runs a packed export's (or a run's) model and task head on audio files, one at a time.

    Each file is read at the architecture's ``input.sample_rate`` (resampled, channels averaged), turned into
    filterbanks when the architecture takes features, and decoded by the head.

    Returns:
        per file ``{"path", "kind", "label"}`` (``classification``: a class name) or ``{"path", "kind",
        "transcript"}`` (``ctc``: the greedy transcript).

    Raises:
        PlannerError: the model has no task head (a distillation run), or a file cannot be read as audio.
    """
    graph, model = load_run_model(source)
    head = getattr(model, "task_head", None)  # a packed export's
    if head is None and not (Path(source) / "manifest.json").is_file():
        head = run_task_head(source)
    if head is None:
        raise PlannerError(f"{source}: holds no task head (a distillation run, or an export of an architecture file): "
                           "nothing to decode; score its features with --task TASK.yaml (a linear probe) instead")  # fmt: skip
    key = "label" if head.kind == "classification" else "transcript"
    rows = []
    with torch.no_grad():
        for path in wavs:
            wav = read_audio(path, graph.spec.input.sample_rate)
            x, xl = collate([wav], [path], graph.spec.input).model_input
            rows.append({"path": str(path), "kind": head.kind, key: head.decode(model(x, xl))[0]})
    return rows


def _run_one(model: nn.Module, graph: Any, path: str, task: ProbeTask) -> Any:
    """The encoder's output on one utterance (its first ``task.max_seconds``), alone in its batch."""
    wav = read_audio(path, task.sample_rate)[: int(task.max_seconds * task.sample_rate)]
    b = collate([wav], [path], graph.spec.input)
    x, xl = b.model_input
    return model(x, xl)


@torch.no_grad()
def _pooled(model: nn.Module, graph: Any, paths: list[str], task: ProbeTask) -> Tensor:
    """``(N, L + 1, D)``: every hidden state and the output, mean-pooled, one utterance at a time."""
    rows = []
    for p in paths:
        out = _run_one(model, graph, p, task)
        feats = [mean_pool(h, hl) for h, hl in zip(out.hidden_states, out.hidden_lengths)]
        feats.append(mean_pool(out.output, out.lengths))
        if len({f.shape[-1] for f in feats}) != 1 and task.features == "weighted_sum":
            raise PlannerError(f"{graph.name}: layers of different widths cannot be summed; use features: last")
        rows.append(torch.stack(feats, 1)[0] if task.features == "weighted_sum" else feats[-1])
    return torch.stack(rows)


def _read(task_file: Path, base: Path, where: str, value: str) -> dict[str, str]:
    path = _tsv_path(base, value)
    try:
        return read_labels(path, str(path.parent))
    except OSError as err:
        raise ConfigError([FieldError(where, f"{path}: cannot read ({err.strerror})")], str(task_file)) from None


def _tsv_path(base: Path, value: str) -> Path:
    return Path(value) if os.path.isabs(value) else base / value


def _check_transcripts(task_file: Path, tsv: Path, alphabet: str) -> None:
    """Every transcript of ``tsv`` encodes in ``alphabet``; else ``TSV: line N: problem`` for each bad line."""
    errors = []
    for n, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 2:  # blank lines; read_labels has rejected malformed ones
            continue
        try:
            encode(parts[1].strip(), alphabet)
        except ValueError as err:
            errors.append(FieldError(f"line {n}", f"{parts[1].strip()!r}: {err}; add them to alphabet in "
                                                  f"{task_file.name}, or normalise the transcript"))  # fmt: skip
    if len(errors) > 20:
        errors = [*errors[:20], FieldError("", f"... and {len(errors) - 20} more lines")]
    if errors:
        raise ConfigError(errors, str(tsv))


def evaluate(
    run: str | os.PathLike[str], task_file: str | os.PathLike[str], *, checkpoint: str | None = None
) -> dict[str, Any]:
    """Trains a linear probe on the run's frozen features and scores it on the held-out set.

    Args:
        run: a training run folder (``arch.yaml`` and ``student.pt`` or a torch-engine checkpoint).
        task_file: the task file (see the module docstring).
        checkpoint: a state dict to evaluate instead of the run's own weights.

    Returns:
        ``classification``: ``{"accuracy", "nll", "chance", "train_accuracy", "classes", ...}``; ``chance`` is
        the held-out rate of its most frequent class. ``ctc``: ``{"cer", "wer", "baseline_cer",
        "baseline_wer", "prior_cer", "prior_wer", "train_cer", "train_wer", "examples", "n_too_short",
        "alphabet", ...}``. Both: ``"kind", "features", "layer_weights", "n_train", "n_test", "steps",
        "run", "task"``.

    Raises:
        ConfigError: the task file or a TSV is invalid (``FILE: field: problem``, ``TSV: line N: problem``).
        PlannerError: the run cannot be loaded, or its layers cannot be summed.

    Example:
        >>> evaluate("runs/a1", "tasks/digits.yaml")["accuracy"]  # doctest: +SKIP
        0.92
        >>> evaluate("runs/qat", "tasks/spelling.yaml")["cer"]  # doctest: +SKIP
        0.31
    """
    head = {"run": str(run)}
    return head | probe_model(None, None, task_file, load=lambda: load_run_model(run, checkpoint))


def probe_model(model: nn.Module | None, graph: Any, task_file: str | os.PathLike[str], *,
                load: Any = None) -> dict[str, Any]:  # fmt: skip
    """:func:`evaluate` on a model in memory (the supernet evaluator's candidates): the probe of ``task_file``
    on ``model``'s frozen features. ``load`` (instead of ``model`` and ``graph``) returns them once the task
    files are checked.

    Returns:
        :func:`evaluate`'s result without ``run``.

    Raises:
        ConfigError: the task file or a TSV is invalid.
    """
    task, base = load_task(task_file)
    task_file = Path(task_file)
    train_labels = _read(task_file, base, "train", task.train)
    test_labels = _read(task_file, base, "test", task.test)
    head = {"task": str(task_file), "kind": task.kind, "features": task.features, "steps": task.steps}
    if task.kind == "ctc":
        for where in (task.train, task.test):
            _check_transcripts(task_file, _tsv_path(base, where), task.characters)
        if load is not None:
            graph, model = load()
        return head | _ctc_probe(model, graph, task, train_labels, test_labels)
    classes = sorted(set(train_labels.values()))
    unseen = sorted(set(test_labels.values()) - set(classes))
    if unseen:
        raise ConfigError([FieldError("test", f"labels {unseen[:5]} never occur in the training TSV")], str(task_file))
    if len(classes) < 2:
        raise ConfigError([FieldError("train", f"one class only ({classes})")], str(task_file))
    if load is not None:
        graph, model = load()
    return head | classification_probe(model, graph, task, train_labels, test_labels, classes)


def classification_probe(model: nn.Module, graph: Any, task: ProbeTask, train_labels: dict[str, str],
                         test_labels: dict[str, str], classes: list[str], *,
                         also: Mapping[str, dict[str, str]] | None = None) -> dict[str, Any]:  # fmt: skip
    """A linear word probe on the frozen ``model``'s mean-pooled features: trained on ``train_labels``, scored on
    ``test_labels`` (the probe of a ``classification`` task; see the module docstring).

    Args:
        model: the encoder, frozen (its mode is left as it is: eval for scoring).
        graph: its architecture (the input kind, for messages).
        task: the probe's settings (``features``, ``steps``, ``lr``, ``batch_size``, ``seed``, ...); its
            ``train`` / ``test`` files are not read here.
        train_labels, test_labels: ``{audio path: class}``.
        classes: every class, in the order of the classifier's outputs.
        also: further held-out sets scored by the same trained probe, ``{name: {audio path: class}}``.

    Returns:
        ``{"accuracy", "nll", "chance", "train_accuracy", "classes", "n_train", "n_test", "layer_weights"}``, and
        with ``also`` ``"also": {name: {"accuracy", "nll", "chance", "n_test"}}``; ``nll`` is the probe's mean
        cross-entropy on the set (natural log; continuous where accuracy moves in steps of one utterance),
        ``chance`` the rate of the set's most frequent class.

    Example:
        >>> task = ProbeTask(train="train.tsv", test="test.tsv", features="last")  # doctest: +SKIP
        >>> classification_probe(model, graph, task, train, test, sorted(set(train.values())))["accuracy"]  # doctest: +SKIP
        0.85
    """
    index = {c: i for i, c in enumerate(classes)}
    xtr = _pooled(model, graph, list(train_labels), task)
    xte = _pooled(model, graph, list(test_labels), task)
    more = {name: _pooled(model, graph, list(labels), task) for name, labels in (also or {}).items()}
    ytr = torch.tensor([index[v] for v in train_labels.values()])
    yte = torch.tensor([index[v] for v in test_labels.values()])
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp(min=1e-5)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    more = {name: (x - mean) / std for name, x in more.items()}

    torch.manual_seed(task.seed)
    gen = torch.Generator().manual_seed(task.seed)
    probe = nn.Linear(xtr.shape[-1], len(classes))
    layer_logits = nn.Parameter(torch.zeros(xtr.shape[1] if xtr.dim() == 3 else 1))
    opt = torch.optim.Adam([*probe.parameters(), layer_logits], lr=task.lr, weight_decay=task.weight_decay)

    def logits(x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = (layer_logits.softmax(0)[None, :, None] * x).sum(1)
        return probe(x)

    def scored(x: Tensor, y: Tensor) -> dict[str, Any]:
        out = logits(x)
        return {"accuracy": float((out.argmax(-1) == y).float().mean()), "nll": float(F.cross_entropy(out, y)),
                "chance": float(torch.bincount(y, minlength=len(classes)).max()) / len(y), "n_test": len(y)}  # fmt: skip

    for _ in range(task.steps):
        idx = torch.randperm(len(ytr), generator=gen)[: task.batch_size]
        loss = F.cross_entropy(logits(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        result = scored(xte, yte)
        train_acc = float((logits(xtr).argmax(-1) == ytr).float().mean())
        extra = {name: scored(x, torch.tensor([index[v] for v in also[name].values()])) for name, x in more.items()}
    result |= {"train_accuracy": train_acc, "classes": classes, "n_train": len(ytr),
               "layer_weights": [round(float(w), 4) for w in layer_logits.detach().softmax(0)]}  # fmt: skip
    return result | ({"also": extra} if also is not None else {})


_classification_probe = classification_probe  # its former private name, for callers written against it


@torch.no_grad()
def _frames(model: nn.Module, graph: Any, paths: list[str], task: ProbeTask) -> list[Tensor]:
    """Per utterance, ``(T, K, D)``: every valid frame of the ``K`` probed states (each utterance run alone)."""
    rows = []
    for p in paths:
        out = _run_one(model, graph, p, task)
        if task.features == "last":
            rows.append(out.output[0, : int(out.lengths[0])][:, None])
            continue
        states = [*out.hidden_states, out.output]
        lengths = [*out.hidden_lengths, out.lengths]
        if len({(s.shape[1], s.shape[2]) for s in states}) != 1 or len({int(n[0]) for n in lengths}) != 1:
            raise PlannerError(f"{graph.name}: layers of different widths or frame rates cannot be summed "
                               "frame by frame; use features: last")  # fmt: skip
        rows.append(torch.stack(states, 2)[0, : int(out.lengths[0])])
    return rows


def _ctc_needs(target: list[int]) -> int:
    """Frames CTC needs for ``target``: one per character, plus a blank between repeated characters."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


def _ctc_probe(model: nn.Module, graph: Any, task: ProbeTask, train_labels: dict[str, str],
               test_labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Per-frame features, a linear CTC head, greedy decoding; CER/WER, baselines and examples."""
    alphabet = task.characters
    xtr = _frames(model, graph, list(train_labels), task)
    xte = _frames(model, graph, list(test_labels), task)
    targets = [torch.tensor(encode(t, alphabet), dtype=torch.long) for t in train_labels.values()]
    too_short = sum(x.shape[0] < _ctc_needs(t.tolist()) for x, t in zip(xtr, targets))
    if too_short == len(xtr):
        raise PlannerError(f"{graph.name}: every training utterance has fewer frames than its transcript needs "
                           "for CTC; the frame rate is too low for characters")  # fmt: skip
    every = torch.cat(xtr)  # (frames, K, D)
    mean, std = every.mean(0), every.std(0).clamp(min=1e-5)
    xtr = [(x - mean) / std for x in xtr]
    xte = [(x - mean) / std for x in xte]

    torch.manual_seed(task.seed)
    gen = torch.Generator().manual_seed(task.seed)
    probe = nn.Linear(every.shape[-1], len(alphabet) + 1)
    layer_logits = nn.Parameter(torch.zeros(every.shape[1]))
    opt = torch.optim.Adam([*probe.parameters(), layer_logits], lr=task.lr, weight_decay=task.weight_decay)

    def logits(xs: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(B, T, V)`` logits of padded utterances and their ``(B,)`` frames."""
        x = pad_sequence(xs, batch_first=True)  # (B, T, K, D), zeros (the mean) after each utterance
        lengths = torch.tensor([u.shape[0] for u in xs])
        return probe((layer_logits.softmax(0)[None, None, :, None] * x).sum(2)), lengths

    for _ in range(task.steps):
        idx = torch.randperm(len(xtr), generator=gen)[: task.batch_size].tolist()
        out, lengths = logits([xtr[i] for i in idx])
        tgt = [targets[i] for i in idx]
        loss = F.ctc_loss(out.log_softmax(-1).transpose(0, 1), torch.cat(tgt), lengths,
                          torch.tensor([t.numel() for t in tgt]), blank=0, zero_infinity=True)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def decode(xs: list[Tensor]) -> list[str]:
        step = task.batch_size
        return [h for i in range(0, len(xs), step) for h in greedy_decode(*logits(xs[i : i + step]), alphabet)]

    refs, train_refs = list(test_labels.values()), list(train_labels.values())
    hyps = decode(xte)
    rates, train_rates = error_rates(hyps, refs), error_rates(decode(xtr), train_refs)
    empty = error_rates([""] * len(refs), refs)
    counts = Counter(t.lower() for t in train_refs)
    prior = min(counts, key=lambda t: (-counts[t], t))  # the most frequent training transcript
    prior_rates = error_rates([prior] * len(refs), refs)
    shown = list(zip(test_labels, refs, hyps))[:_EXAMPLES]
    examples = [{"path": p, "reference": r.lower(), "hypothesis": h} for p, r, h in shown]
    return {"cer": rates.cer, "wer": rates.wer, "baseline_cer": empty.cer, "baseline_wer": empty.wer,
            "prior_cer": prior_rates.cer, "prior_wer": prior_rates.wer, "train_cer": train_rates.cer,
            "train_wer": train_rates.wer, "alphabet": alphabet, "n_train": len(xtr), "n_test": len(xte),
            "n_too_short": too_short, "examples": examples,
            "layer_weights": [round(float(w), 4) for w in layer_logits.detach().softmax(0)]}  # fmt: skip
