"""CTC decoding and error rates (trainers/ctc.py), and the CTC linear probe of ``planner evaluate``.

The probe's data: "spelled" utterances where each character is a tone of its own pitch (``TONES``), so the
frames carry the transcript and a linear CTC head on frozen features can read it; training on shuffled
transcripts is the control that shows the probe learns from the audio and not from lengths or priors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import planner
from planner.cli import main
from planner.errors import ConfigError
from planner.ir.io import dumps
from support import write_tone_corpus, write_tsv
from trainers.ctc import BatchDecoding, encode, error_rates, greedy_decode, greedy_decode_ids
from trainers.evaluate import ProbeTask, evaluate, load_task
from trainers.recipe import DEFAULT_ALPHABET, LossConfig

DATA = Path(__file__).resolve().parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def write_run(folder: Path, arch: Path, seed: int = 0) -> Path:
    """A run folder (``arch.yaml``, ``student.pt``) holding a randomly initialised encoder."""
    graph = planner.load(arch)
    torch.manual_seed(seed)
    model = planner.materialize(graph)
    folder.mkdir(parents=True)
    (folder / "arch.yaml").write_text(dumps(graph))
    torch.save(model.state_dict(), folder / "student.pt")
    return folder


@pytest.fixture(scope="module")
def spelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 training and 12 held-out spelled utterances, their TSVs, and a run of tiny-student.yaml."""
    root = tmp_path_factory.mktemp("spelled")
    write_tsv(root / "train.tsv", write_tone_corpus(root, "train", 40, seed=0))
    write_tsv(root / "test.tsv", write_tone_corpus(root, "test", 12, seed=1))
    write_run(root / "run", DATA / "tiny-student.yaml")
    return root


def _one_hot(paths: list[list[int]], vocab: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(paths), vocab).float()


# -- decoding and error rates ----------------------------------------------------------------------------


def test_greedy_decoding_collapses_repeats_drops_blanks_and_ignores_padding() -> None:
    paths = [
        [1, 1, 0, 1, 2, 2, 0, 0],  # a a - a b b - -  -> "aab": a blank separates a real repeat
        [1, 1, 1, 2, 2, 1, 0, 0],  # a a a b b a - -  -> "aba": adjacent repeats merge
        [0, 0, 0, 0, 0, 0, 0, 0],  # all blank        -> ""
        [3, 0, 3, 2, 2, 2, 1, 1],  # valid 3 frames: "  -  " -> "  " (space twice), padding "bbbaa" ignored
        [2, 2, 2, 2, 2, 2, 2, 2],  # no valid frame   -> ""
    ]
    lengths = torch.tensor([8, 8, 8, 3, 0])
    assert greedy_decode(_one_hot(paths, 4), lengths, "ab ") == ["aab", "aba", "", "  ", ""]
    # log-probabilities decode like logits (the arg-max is the same)
    assert greedy_decode(_one_hot(paths, 4).log_softmax(-1), lengths, "ab ") == ["aab", "aba", "", "  ", ""]
    with pytest.raises(ValueError, match="4 classes for 2 characters"):
        greedy_decode(_one_hot(paths, 4), lengths, "ab")
    with pytest.raises(ValueError, match="class indices span"):
        greedy_decode_ids(torch.tensor([[0, 5]]), torch.tensor([2]), "ab ")


def test_encode_maps_characters_after_the_blank_and_names_strangers() -> None:
    assert encode("Ab a", " ab") == [2, 3, 1, 2]  # lower-cased; blank 0, alphabet[i] -> i + 1
    with pytest.raises(ValueError, match=r"characters \['7', '9'\] are not in the alphabet"):
        encode("a9 7", " ab")
    # the probe and the training loss share one default alphabet
    assert ProbeTask(train="a", test="b", kind="ctc").characters == DEFAULT_ALPHABET == LossConfig().alphabet


def test_error_rates_of_known_strings() -> None:
    r = error_rates(["kitten"], ["sitting"])  # the textbook distance: 3 edits over 7 characters
    assert (r.char_errors, r.chars, r.cer) == (3, 7, 3 / 7) and (r.word_errors, r.words, r.wer) == (1, 1, 1.0)
    # one substitution (sat -> sit) and one deletion (the) over six words; corpus rates sum edits and lengths
    r = error_rates(["the cat sit on mat", "A"], ["the cat sat on the mat", "a"])
    assert (r.word_errors, r.words) == (2, 7) and r.wer == 2 / 7
    assert (r.char_errors, r.chars) == (1 + 4, 22 + 1)  # "sit" vs "sat", "the " deleted; case ignored
    assert error_rates(["", ""], ["ab c", "d"]).cer == 1.0 == error_rates(["", ""], ["ab c", "d"]).wer
    assert error_rates(["abc"], ["abc"]) == error_rates(["ABC"], ["abc"])
    assert error_rates(["abc"], ["abc"]).cer == 0.0
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        error_rates(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="undefined"):
        error_rates(["a"], [" "])


def test_batch_decoding_scores_its_greedy_paths() -> None:
    best = torch.tensor([[1, 0, 2, 2], [3, 3, 0, 1]])
    dec = BatchDecoding(best, torch.tensor([4, 2]), ("ab", "cc"), "abc")
    assert dec.hypotheses() == ["ab", "c"]
    assert dec.error_rates() == error_rates(["ab", "c"], ["ab", "cc"]) and dec.error_rates().cer == 1 / 4


# -- the CTC probe ---------------------------------------------------------------------------------------


def _task(root: Path, name: str, train: str = "train.tsv", **extra: str) -> Path:
    body = {"kind": "ctc", "train": train, "test": "test.tsv", "alphabet": "'abc '", "steps": "200",
            "batch_size": "16", "lr": "2.0e-2"} | extra  # fmt: skip
    path = root / name
    path.write_text("".join(f"{k}: {v}\n" for k, v in body.items()))
    return path


def test_ctc_probe_reads_the_transcripts_from_frozen_frames(spelled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = _task(spelled, "ctc.yaml")
    assert main(["evaluate", str(spelled / "run"), "--task", str(task)]) == 0
    out = json.loads(capsys.readouterr().out)
    print({k: v for k, v in out.items() if k != "examples"})
    assert out["kind"] == "ctc" and out["features"] == "weighted_sum" and len(out["layer_weights"]) == 3
    assert (out["n_train"], out["n_test"], out["n_too_short"]) == (40, 12, 0)
    # Baselines that ignore the audio: the empty transcript (exactly 1.0) and the most frequent training
    # transcript for every utterance (0.81 on this data; random strings over 4 symbols keep any fixed guess
    # above 0.6). A probe at <= 0.2 has read the characters from the frames.
    assert out["baseline_cer"] == 1.0 and out["baseline_wer"] == 1.0 and out["prior_cer"] > 0.6
    assert out["cer"] <= 0.2 and out["wer"] <= 0.5 and out["train_cer"] <= 0.2
    assert len(out["examples"]) == 5 and {"path", "reference", "hypothesis"} <= set(out["examples"][0])
    ref = dict(line.split("\t") for line in (spelled / "test.tsv").read_text().splitlines())
    first = out["examples"][0]
    assert first["reference"] == ref[Path(first["path"]).name]


def test_ctc_probe_on_shuffled_transcripts_does_not_beat_the_prior(spelled: Path) -> None:
    rows = [line.split("\t") for line in (spelled / "train.tsv").read_text().splitlines()]
    texts = [t for _, t in rows]
    random.Random(1).shuffle(texts)
    write_tsv(spelled / "shuffled.tsv", [(p, t) for (p, _), t in zip(rows, texts)])
    out = evaluate(spelled / "run", _task(spelled, "shuffled.yaml", train="shuffled.tsv", features="last"))
    assert out["layer_weights"] == [1.0]
    assert out["cer"] >= 0.5  # the same probe, labels no longer tied to the audio: near the prior


def test_ctc_task_file_errors_name_the_file_field_and_line(tmp_path: Path) -> None:
    def task(text: str) -> Path:
        (tmp_path / "task.yaml").write_text(text)
        return tmp_path / "task.yaml"

    with pytest.raises(ConfigError, match=r"task.yaml: alphabet: only allowed with kind: ctc"):
        load_task(task("train: a.tsv\ntest: b.tsv\nalphabet: abc\n"))
    with pytest.raises(ConfigError, match=r"task.yaml: alphabet: 'abca' must be non-empty characters, each once"):
        load_task(task("kind: ctc\ntrain: a.tsv\ntest: b.tsv\nalphabet: abca\n"))
    with pytest.raises(ConfigError, match=r"task.yaml: kind: 'asr' is not allowed"):
        load_task(task("kind: asr\ntrain: a.tsv\ntest: b.tsv\n"))
    write_tsv(tmp_path / "a.tsv", [("x.wav", "Abc"), ("y.wav", "ab7"), ("z.wav", "cab")])
    write_tsv(tmp_path / "b.tsv", [("w.wav", "a-b")])
    # transcripts are checked before any audio or run is read
    with pytest.raises(ConfigError) as info:
        evaluate(tmp_path / "no-run", task("kind: ctc\ntrain: a.tsv\ntest: b.tsv\nalphabet: 'abc '\n"))
    assert str(info.value).startswith(f"{tmp_path / 'a.tsv'}: line 2: 'ab7': characters ['7'] are not in the alphabet")
    assert "add them to alphabet in task.yaml" in str(info.value)
    write_tsv(tmp_path / "a.tsv", [("x.wav", "Abc")])
    with pytest.raises(ConfigError, match=r"b.tsv: line 1: 'a-b': characters \['-'\]"):
        evaluate(tmp_path / "no-run", tmp_path / "task.yaml")
