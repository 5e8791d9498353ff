"""HuBERT BASE: the architecture file counts torchaudio's parameters, and torchaudio's weights load into the
planner's model and give torchaudio's outputs (random weights: no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchaudio

import planner
from planner.errors import PlannerError, WeightMappingError
from planner.pretrained import load_checkpoint_file, load_torchaudio_weights

STUDIES = Path(__file__).resolve().parent.parent / "studies"
HUBERT = STUDIES / "hubert-base.yaml"
PARAMS = 94_370_944

# float32 through 7 convs and 12 post-LN layers with the same weights; only the kernels differ (torchaudio
# uses GroupNorm and scaled_dot_product_attention, the planner a masked group norm and an explicit softmax).
# Layer norms keep activations O(1) (|x| < 5 here), and the observed difference is ~4e-6, so 1e-4 leaves
# room for other BLAS builds while any wrong mapping (errors of order 1) fails.
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, planner.nn.Encoder]:
    torch.manual_seed(0)
    reference = torchaudio.models.hubert_base().eval()
    model = planner.materialize(planner.load(HUBERT)).eval()
    load_torchaudio_weights(model, reference)
    return reference, model


def test_param_count_is_torchaudios(pair: tuple[torch.nn.Module, planner.nn.Encoder]) -> None:
    reference, model = pair
    graph = planner.load(HUBERT)
    assert graph.param_count == PARAMS
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    assert sum(p.numel() for p in reference.parameters()) == PARAMS


def test_one_second_matches_torchaudio(pair: tuple[torch.nn.Module, planner.nn.Encoder]) -> None:
    reference, model = pair
    x = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _ = reference(x)
        layers, _ = reference.extract_features(x)
        got = model(x)
    assert got.output.shape == want.shape == (1, 49, 768)
    torch.testing.assert_close(got.output, want, atol=ATOL, rtol=RTOL)
    assert len(got.hidden_states) == len(layers) == 12
    for i, (h, w) in enumerate(zip(got.hidden_states, layers)):
        torch.testing.assert_close(h, w, atol=ATOL, rtol=RTOL, msg=lambda m, i=i: f"layer {i}: {m}")


def test_padded_batch_matches_torchaudio_per_utterance(pair: tuple[torch.nn.Module, planner.nn.Encoder]) -> None:
    """torchaudio's first group norm also normalises over the padding of a batch, so its padded rows are not
    its own single-utterance outputs; compare our padded batch with torchaudio run on each utterance alone,
    and only the unpadded row with torchaudio's batch."""
    reference, model = pair
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([16000, 11200])
    with torch.no_grad():
        got = model(x, lengths)
        batch, batch_lengths = reference(x, lengths)
        assert got.lengths.tolist() == batch_lengths.tolist() == [49, 34]
        torch.testing.assert_close(got.output[0], batch[0], atol=ATOL, rtol=RTOL)
        for b, n in enumerate(lengths.tolist()):
            # post-LN: torchaudio's output is its last layer's, so one extract_features call covers both
            layers, _ = reference.extract_features(x[b : b + 1, :n])
            frames = layers[-1].shape[1]
            assert frames == got.lengths[b]
            torch.testing.assert_close(got.output[b, :frames], layers[-1][0], atol=ATOL, rtol=RTOL)
            for i, w in enumerate(layers):
                torch.testing.assert_close(got.hidden_states[i][b, :frames], w[0], atol=ATOL, rtol=RTOL,
                                           msg=lambda m, i=i: f"layer {i}: {m}")  # fmt: skip


def test_checkpoint_file_round_trip(pair: tuple[torch.nn.Module, planner.nn.Encoder], tmp_path) -> None:  # noqa: ANN001
    reference, model = pair
    path = tmp_path / "hubert_base.pt"
    torch.save(reference.state_dict(), path)
    fresh = planner.materialize(planner.load(HUBERT))
    load_checkpoint_file(fresh, path)
    ours, loaded = model.state_dict(), fresh.state_dict()
    assert ours.keys() == loaded.keys()
    for key in ours:
        assert torch.equal(ours[key], loaded[key]), key  # a copy: exact


def test_legacy_and_pretrain_key_spellings(pair: tuple[torch.nn.Module, planner.nn.Encoder]) -> None:
    """A HuBERTPretrainModel's ``wav2vec2.`` prefix and the old ``weight_g``/``weight_v`` weight norm load too."""
    reference, model = pair
    legacy = {"original0": "weight_g", "original1": "weight_v"}
    state = {}
    for key, value in reference.state_dict().items():
        head, _, last = key.rpartition(".")
        if last in legacy:
            key = f"{head.removesuffix('.parametrizations.weight')}.{legacy[last]}"
        state[f"wav2vec2.{key}"] = value
    fresh = planner.materialize(planner.load(HUBERT))
    load_torchaudio_weights(fresh, state)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_mismatched_architecture_raises_a_clear_error(pair: tuple[torch.nn.Module, planner.nn.Encoder]) -> None:
    reference, _ = pair
    small = planner.materialize(planner.load(STUDIES / "recycle-and-distill/armhubert-s.yaml"))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(WeightMappingError) as info:
        load_torchaudio_weights(small, reference)
    message = str(info.value)
    assert isinstance(info.value, PlannerError)
    assert "armhubert-s" in message
    assert "183 shape mismatches" in message
    assert ("frontend.0.conv_layers.0.conv.weight <- feature_extractor.conv_layers.0.conv.weight: "
            "checkpoint (512, 1, 10), model (128, 1, 10)") in message  # fmt: skip
    assert "missing in the checkpoint" in message and "frontend.1.embedding" in message  # the mask embedding
    assert "unexpected in the checkpoint" in message and "encoder.feature_projection.projection.weight" in message
    # ARMHuBERT's reuse layers have no Q/K projections
    assert "encoder.transformer.layers.1.attention.k_proj.weight (the model has no layers.1.attention.k_proj" in message
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items()), "the model must stay unchanged"
    with pytest.raises(WeightMappingError, match="shape mismatches"):
        load_torchaudio_weights(small, reference, strict=False)  # shapes are never negotiable


def test_fewer_layers_lists_the_extra_ones_and_loads_when_not_strict(pair) -> None:  # noqa: ANN001
    reference, model = pair
    shallow = planner.materialize(planner.loads(HUBERT.read_text().replace("repeat: 12", "repeat: 2")))
    with pytest.raises(
        WeightMappingError,
        match=r"160 unexpected in the checkpoint \(torchaudio keys\):\n    encoder\.transformer\.layers\.2\.",
    ):
        load_torchaudio_weights(shallow, reference)
    load_torchaudio_weights(shallow, reference, strict=False)
    for key, value in shallow.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def _tiny_reference() -> torch.nn.Module:
    """A pre-LN wav2vec 2.0 (final layer norm after the stack) with a layer-norm extractor and a CTC ``aux``."""
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_model(
        extractor_mode="layer_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2)], extractor_conv_bias=True,
        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=True, encoder_layer_drop=0.0,
        aux_num_out=10,
    ).eval()  # fmt: skip


def _tiny_arch(weight_norm: bool, compression: list | None = None) -> dict:
    arch = {
        "name": "tiny-wav2vec2", "width": 32,
        "frontend": [{"kind": "conv_extractor", "conv_layers": [[16, 10, 5], [16, 3, 2]], "bias": True,
                      "norm": "layer_all", "output_norm": True, "projection": True},
                     {"kind": "conv_pos_embedding", "kernel": 16, "groups": 4, "weight_norm": weight_norm}],
        "layers": [{"kind": "transformer", "repeat": 2, "heads": 4, "ffn": 64, "norm": "pre"}],
        "post": [{"kind": "layer_norm"}],
        "heads": [{"kind": "ctc", "vocab": 10}],
    }  # fmt: skip
    if compression:
        arch["compression"] = compression
    return arch


@pytest.mark.parametrize("weight_norm", [True, False], ids=["weight_norm", "folded"])
def test_small_pre_ln_model_with_ctc_head(weight_norm: bool) -> None:
    """Pre-LN layers with the final norm in ``post``, torchaudio's ``aux`` as the CTC head, and (``folded``) a
    weight-normalised positional conv loaded into a plain one."""
    reference = _tiny_reference()
    model = planner.materialize(planner.from_dict(_tiny_arch(weight_norm))).eval()
    load_torchaudio_weights(model, reference)
    x = torch.randn(1, 4000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, _ = reference(x)
        layers, _ = reference.extract_features(x)
        got = model(x)
    torch.testing.assert_close(got.logits, logits, atol=1e-5, rtol=1e-5)  # 2 tiny layers: tighter than HuBERT
    for h, w in zip(got.hidden_states, layers):
        torch.testing.assert_close(h, w, atol=1e-5, rtol=1e-5)


def test_compressed_model_takes_the_float_checkpoint() -> None:
    reference = _tiny_reference()
    rules = [{"modules": ["ffn"], "weight": "int4", "sparsity": "2:4", "activation": "binary"},
             {"layers": "frontend", "weight": "int8", "activation": 8}]  # fmt: skip
    model = planner.materialize(planner.from_dict(_tiny_arch(True, rules)))
    load_torchaudio_weights(model, reference)  # strict: the compression state is not asked for
    ref = reference.state_dict()
    got = model.state_dict()
    assert torch.equal(got["layers.1.feed_forward.output_dense.parametrizations.weight.original"],
                       ref["encoder.transformer.layers.1.feed_forward.output_dense.weight"])  # fmt: skip
    assert torch.equal(got["frontend.0.projection.parametrizations.weight.original"],
                       ref["encoder.feature_projection.projection.weight"])  # fmt: skip
    assert torch.equal(got["frontend.1.conv.parametrizations.weight.original1"],
                       ref["encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"])  # fmt: skip
