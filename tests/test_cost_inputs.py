"""Utterances shorter than the frontend's receptive field: the model cannot run them, so they are not priced.

:func:`planner.cost.estimate.shortest_input` is checked against receptive fields computed by hand and
against the materialized model, which runs at the minimum and raises one sample below it.
"""

from __future__ import annotations

import pytest
import torch

from planner.cost import estimate
from planner.cost.estimate import shortest_input
from planner.errors import FieldError
from planner.ir import from_dict, load
from support import STUDIES  # noqa: E402

# kernels/strides (10, 5), (3, 2), (2, 2): receptive field 10 + (3 - 1) x 5 + (2 - 1) x 5 x 2 = 30 samples
WAVE = {
    "name": "wave", "input": {"kind": "waveform", "sample_rate": 16000}, "width": 16,
    "frontend": [{"kind": "conv_extractor", "conv_layers": [[8, 10, 5], [8, 3, 2], [8, 2, 2]], "projection": True}],
    "layers": [{"kind": "transformer", "heads": 2, "ffn": 32}],
}  # fmt: skip
# Kaldi framing (400-sample window, hop 160) then a 3x3 stride-2 convolution twice: 7 frames, so
# 400 + 6 x 160 = 1360 samples
FEATS = {
    "name": "feats", "input": {"kind": "features", "n_mels": 16}, "width": 16,
    "frontend": [{"kind": "conv2d_subsampling", "channels": [4, 4]}],
    "layers": [{"kind": "transformer", "heads": 2, "ffn": 32}],
}  # fmt: skip


def test_shortest_input_is_the_receptive_field():
    assert shortest_input(from_dict(WAVE)) == 30
    assert shortest_input(from_dict(FEATS)) == 1360
    assert shortest_input(load(STUDIES / "hubert-base.yaml")) == 400  # wav2vec 2.0's 25 ms receptive field


def test_hubert_base_at_399_samples_is_refused_with_the_minimum():
    graph = load(STUDIES / "hubert-base.yaml")
    assert estimate(graph, samples=400).macs > 0
    with pytest.raises(FieldError) as err:
        estimate(graph, samples=399)
    text = str(err.value)
    assert text.startswith("samples[0]: ") and "399 samples" in text and "400 samples" in text
    with pytest.raises(FieldError, match=r"samples\[1\]: .*16 samples"):
        estimate(graph, samples=[16000, 16])  # any position in the list, not only the first
    with pytest.raises(FieldError, match=r"seconds: .*0.001 s \(16 samples\)"):
        estimate(graph, seconds=0.001)


def test_features_shorter_than_one_window_name_the_framing():
    with pytest.raises(FieldError, match="399 samples leaves the input framing with no frames.*1360 samples"):
        estimate(from_dict(FEATS), samples=399)
    with pytest.raises(FieldError, match="1359 samples leaves frontend.0 with no frames"):
        estimate(from_dict(FEATS), samples=1359)


@pytest.mark.parametrize("data", [WAVE, FEATS], ids=["waveform", "features"])
def test_the_model_runs_at_the_minimum_and_raises_below_it(data, one_thread):
    from planner.nn import build

    graph = from_dict(data)
    need = shortest_input(graph)
    model = build(graph).eval()
    inp = graph.spec.input

    def run(samples: int) -> None:
        x = torch.randn(1, samples) if inp.kind == "waveform" else torch.randn(1, inp.frames(samples), 16)
        with torch.no_grad():
            model(x)

    run(need)
    assert estimate(graph, samples=need).macs > 0
    with pytest.raises(RuntimeError):  # torch: the kernel is larger than the input
        run(need - 1 if inp.kind == "waveform" else need - 160)  # features: one frame fewer
    with pytest.raises(FieldError):
        estimate(graph, samples=need - 1)


def test_a_refused_length_is_not_memoized():
    graph = from_dict(WAVE)
    for _ in range(2):  # the second call must refuse as well (no cached frame counts for 29 samples)
        with pytest.raises(FieldError):
            estimate(graph, samples=29)
