"""Hostile inputs to ``planner cost``: utterances the model cannot run, unknown conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import refused, snapshot

ROOT = Path(__file__).resolve().parents[2]
HUBERT = ROOT / "studies" / "hubert-base.yaml"


@pytest.mark.parametrize("text, line, samples", [
    ("100\n16000\n", "line 1", "100 samples"),  # a 0-frame utterance first in the list (was an IndexError)
    ("16000\n# a comment\n\n399\n", "line 4", "399 samples"),  # later, after blanks and comments
    ("1\n", "line 1", "1 samples"),
])  # fmt: skip
def test_too_short_utterance_in_lengths_file(cli, tmp_path, text, line, samples):
    lengths = tmp_path / "utts.txt"
    lengths.write_text(text)
    before = snapshot(lengths, HUBERT)
    result = cli(["cost", HUBERT, "--lengths", lengths])
    refused(result, names=["utts.txt", line, samples, "400 samples"], code=2)
    assert snapshot(lengths, HUBERT) == before


def test_too_short_seconds(cli):
    refused(cli(["cost", HUBERT, "--seconds", "0.02"]), names=["seconds", "320 samples", "400 samples"], code=2)


def test_unknown_bops_convention(cli):
    refused(cli(["cost", HUBERT, "--bops", "bitops"]), names=["--bops", "jeon2023"], code=2)
