"""Hostile recipes: the masking distillation fields (``loss.masking``), refused with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import refused, snapshot

BASE = "teacher: {{kind: torchaudio_hubert, checkpoint: t.pt}}\ndata: {{train: m.tsv}}\nloss: {{masking: {masking}}}\n"

CASES = [
    ("{min_space: 1}", "loss.masking.min_space", "needs overlap: false"),
    ("{overlap: false, min_space: -2}", "loss.masking.min_space", "must be at least 0"),
    ("{overlap: maybe}", "loss.masking.overlap", "expected true or false"),
    ("{selection: poisson}", "loss.masking.selection", "one of 'static', 'uniform'"),
    ("{normalize: frames}", "loss.masking.normalize", "one of 'paper', 'code'"),
    ("{same_count: 1}", "loss.masking.same_count", "expected true or false"),
    ("{prob: .nan, overlap: false}", "loss.masking.prob", "prob"),
    ("{mask_min_space: 1}", "loss.masking.mask_min_space", "unknown"),
]


@pytest.mark.parametrize(("masking", "field", "says"), CASES)
def test_bad_masking_is_refused(cli, tmp_path: Path, masking: str, field: str, says: str) -> None:  # noqa: ANN001
    recipe = tmp_path / "r.yaml"
    recipe.write_text(BASE.format(masking=masking))
    before = snapshot(tmp_path)
    for verb in ("recipe", "validate"):
        result = cli([verb, recipe])
        refused(result, names=[str(recipe), field, says], code=2)
    assert snapshot(tmp_path) == before
