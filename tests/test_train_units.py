"""Training pieces: recipe validation, manifests and batches, span masks, losses (eq. 6), teachers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import planner
from planner.errors import ConfigError, FieldError
from support import DATA, ROOT, recipe_text, ta_teacher_yaml
from trainers import (
    BatchStream,
    Distiller,
    align_frames,
    compute_span_mask,
    distillation_loss,
    dump_recipe,
    frame_distance,
    layer_pairs,
    load_recipe,
    load_teacher,
    loads_recipe,
    read_manifest,
)
from trainers.data import collate, fbank_features, read_audio
from trainers.recipe import LossConfig, MaskingConfig
from trainers.teacher import TeacherOutput

# -- recipe -------------------------------------------------------------------------------------------


def test_shipped_recipe_loads_with_paper_defaults() -> None:
    recipe = load_recipe(ROOT / "recipes" / "distill.yaml")
    assert recipe.teacher.kind == "torchaudio_hubert"
    # ARMHuBERT's masks (issue 12 item 6; tests/test_masking.py), eq. 6 normalised as the paper writes it
    assert recipe.loss.masking == MaskingConfig(prob=0.8, span=10, overlap=False, min_space=1, selection="uniform",
                                                same_count=True, normalize="paper")  # fmt: skip
    assert recipe.optimizer.lr == 2.0e-4 and recipe.schedule.warmup_ratio == 0.07
    assert recipe.resolve(recipe.teacher.checkpoint).startswith(str(ROOT / "recipes"))
    data = dump_recipe(recipe)
    assert loads_recipe(__import__("yaml").safe_dump(data), base_dir=recipe.base_dir) == recipe


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("teacher: {kind: x}\ndata: {train: a.tsv}\n", "teacher.kind"),
        ("teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv, batch_secs: 3}\n", "data.batch_secs"),
        ("teacher: {kind: architecture}\ndata: {train: a.tsv}\n", "teacher.arch"),
        (
            "teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\nloss: {masking: {prob: 1.5}}\n",
            "loss.masking.prob",
        ),
        (
            "teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\nloss: {layers: {0: 1}, weights: [1, 2]}\n",
            "loss.weights",
        ),
        (
            "teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\nloss: {masking: {schedule: linear}}\n",
            "loss.masking.prob_end",
        ),
        ("teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\ndeepspeed: {zero_stage: 2}\n", "deepspeed"),
        ("teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\nsteps: 0\n", "steps"),
    ],
)
def test_recipe_errors_name_file_and_field(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_recipe(text, source="r.yaml")
    assert str(info.value).startswith(f"r.yaml: {where}: "), str(info.value)


def test_masking_linear_schedule() -> None:
    m = MaskingConfig(prob=0.4, prob_end=0.8, schedule="linear")
    assert m.prob_at(0, 11) == pytest.approx(0.4) and m.prob_at(10, 11) == pytest.approx(0.8)
    assert m.prob_at(5, 11) == pytest.approx(0.6)


# -- data ---------------------------------------------------------------------------------------------


def test_scan_folder_and_manifest(corpus: Path) -> None:
    lines = corpus.read_text().splitlines()
    assert len(lines) == 7 and Path(lines[0]).is_dir()
    m = read_manifest(corpus)
    assert {Path(u.path).suffix for u in m.utterances} == {".wav", ".flac"}
    assert int(0.25 * 16000) in {u.samples for u in m.utterances}
    wav8k = next(u for u in m.utterances if u.path.endswith("u1.wav"))
    assert wav8k.samples == int(0.4 * 8000)
    assert read_audio(wav8k.path).numel() == int(0.4 * 16000)  # resampled to 16 kHz


def test_bad_manifest_line_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "m.tsv"
    bad.write_text("/root\nok.wav\t10\nbroken line\n")
    with pytest.raises(ConfigError, match=r"m.tsv: line 3: "):
        read_manifest(bad)


def test_batches_are_deterministic_bucketed_and_resumable(corpus: Path) -> None:
    def stream() -> BatchStream:
        return BatchStream([str(corpus)], batch_seconds=1.0, max_seconds=0.5, seed=7)

    a = [next(stream_a := stream()) for _ in range(1)] + [next(stream_a) for _ in range(7)]
    b = stream()
    paths_b = [next(b).paths for _ in range(8)]
    assert [x.paths for x in a] == paths_b
    for batch in a:
        assert batch.waveforms.shape[1] == int(batch.lengths.max()) <= 8000
        if not any(p.endswith("u1.wav") for p in batch.paths):  # bucketing reads u1's 8 kHz count as is
            assert batch.size * batch.waveforms.shape[1] <= 16000
    c = stream()
    for _ in range(3):
        next(c)
    pos = c.position
    d = stream()
    d.seek(pos)
    assert [next(c).paths for _ in range(4)] == [next(d).paths for _ in range(4)]
    # epochs are reshuffled but cover every utterance once
    e0 = sorted(i for batch in stream().epoch_batches(0) for i in batch)
    assert e0 == list(range(6))


def test_fbank_frames_follow_the_input_spec() -> None:
    spec = planner.loads(
        "name: f\ninput: {kind: features, n_mels: 40}\nwidth: 16\nfrontend: [{kind: conv2d_subsampling, channels: [8, 8]}]\n"
        "layers: [{kind: transformer, heads: 2, ffn: 32}]\n"
    ).spec.input
    waves = [torch.randn(8000), torch.randn(5000)]
    batch = collate(waves, ["a", "b"], spec)
    assert batch.features.shape == (2, spec.frames(8000), 40)
    assert batch.feature_lengths.tolist() == [spec.frames(8000), spec.frames(5000)]
    assert torch.equal(batch.features[1, : spec.frames(5000)], fbank_features(waves[1], spec))


# -- masks and losses ----------------------------------------------------------------------------------


def test_span_masks_follow_hubert() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1000, 600, 8])
    mask = compute_span_mask(lengths, 1000, prob=0.4, span=10, generator=g)
    assert not mask[1, 600:].any() and not mask[2].any()  # padding and too-short utterances
    frac = mask[0].float().mean().item()
    assert 0.25 < frac < 0.45  # 40 spans of 10 frames before overlaps: 1 - (1 - 0.01)^400 ~ 0.33 after
    # every masked run is a union of whole spans: runs are at least `span` long
    runs = torch.diff(torch.cat([torch.tensor([0]), mask[0].int(), torch.tensor([0])])).nonzero().flatten()
    assert (runs[1::2] - runs[::2]).min() >= 10


def test_distances() -> None:
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    assert torch.allclose(frame_distance(s, t, "l2"), ((s - t) ** 2).mean(-1))
    expected = (s - t).abs().mean(-1) - torch.nn.functional.logsigmoid(torch.cosine_similarity(s, t, dim=-1))
    assert torch.allclose(frame_distance(s, t, "l1_cosine"), expected)


def test_alignment_rule() -> None:
    t = torch.arange(2 * 10 * 1, dtype=torch.float).reshape(2, 10, 1)
    same, n = align_frames(t, torch.tensor([10, 8]), 9, torch.tensor([9, 7]))  # same rate: truncate to min
    assert torch.equal(same, t[:, :9]) and n.tolist() == [9, 7]
    pooled, n = align_frames(t, torch.tensor([10, 10]), 5, torch.tensor([5, 5]))  # teacher at twice the rate
    assert torch.allclose(pooled[0, :, 0], torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5])) and n.tolist() == [5, 5]


def test_default_layer_weights() -> None:
    assert layer_pairs(LossConfig(), [0, 1, 2], 3) == [(0, 0, 0.1), (1, 1, 0.1), (2, 2, 1.0)]
    with pytest.raises(FieldError, match="no projection head"):
        layer_pairs(LossConfig(layers=((5, 1),)), [0, 1], 3)
    with pytest.raises(FieldError, match="3 weights for 2 distilled layers"):
        layer_pairs(LossConfig(weights=(0.1, 0.1, 1.0)), [0, 1], 3)


@pytest.mark.parametrize(("student", "teacher", "expected"), [
    (12, 12, list(range(12))),  # same depth: the identity
    (4, 12, [2, 5, 8, 11]),  # 3 teacher layers per student layer, ending on the last
    (3, 12, [3, 7, 11]),
    (6, 4, [0, 0, 1, 2, 2, 3]),  # deeper student: (s + 1) * 4 / 6 = 0.67, 1.33, 2, 2.67, 3.33, 4 -> round - 1
    (1, 12, [11]),
])  # fmt: skip
def test_proportional_layer_map_ends_on_the_last_teacher_layer(student: int, teacher: int, expected: list[int]) -> None:
    pairs = layer_pairs(LossConfig(layers="proportional"), list(range(student)), teacher, student)
    assert [t for _, t, _ in pairs] == expected
    assert [w for _, _, w in pairs] == [0.1] * (student - 1) + [1.0]
    # heads on some layers only: each keeps its own proportional target
    assert layer_pairs(LossConfig(layers="proportional"), [1, 3], 12, 4) == [(1, 5, 0.1), (3, 11, 1.0)]


def test_proportional_layer_map_in_a_recipe(tmp_path: Path) -> None:
    text = recipe_text("{kind: self, checkpoint: f.pt}", tmp_path / "m.tsv",
                       loss="{layers: proportional, masking: {prob: 0.5, span: 5}}")  # fmt: skip
    recipe = loads_recipe(text, "r.yaml", str(tmp_path))
    assert recipe.loss.layers == "proportional"
    assert loads_recipe(yaml.safe_dump(dump_recipe(recipe)), "again.yaml", str(tmp_path)) == recipe
    with pytest.raises(
        ConfigError, match=r"r.yaml: loss.layers: 'last' is not a layer mapping \(allowed: heads, proportional"
    ):
        loads_recipe(text.replace("layers: proportional", "layers: last"), "r.yaml", str(tmp_path))


class RecordingTeacher(torch.nn.Module):
    """Records its inputs; returns 0 everywhere on a clean input and 1 on a masked one (at 10 ms frames)."""

    num_layers = 3
    supports_mask = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def mask_lengths(self, samples: torch.Tensor) -> tuple[torch.Tensor, int]:
        return samples // 160, int(samples.max()) // 160

    def forward(self, wav, lengths, mask=None, num_layers=None) -> TeacherOutput:  # noqa: ANN001
        self.calls.append((wav.clone(), None if mask is None else mask.clone()))
        frames = int(lengths.max()) // 160
        value = 0.0 if mask is None else 1.0
        return TeacherOutput([torch.full((len(wav), frames, 48), value) for _ in range(3)], lengths // 160)


def test_masking_distillation_uses_clean_teacher_on_masked_and_masked_teacher_on_unmasked(tmp_path: Path) -> None:
    graph = planner.load(DATA / "tiny-student.yaml")
    recipe = loads_recipe(recipe_text("{kind: torchaudio_hubert, checkpoint: t.pt}", tmp_path / "m.tsv"))
    teacher = RecordingTeacher()
    distiller = Distiller(graph, teacher, recipe)
    torch.manual_seed(0)
    student = planner.materialize(graph)
    wav = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6400])
    batch = collate([wav[0], wav[1, :6400]], ["a", "b"])
    res = distiller(student, batch, step=4)

    (clean_wav, clean_mask), (masked_wav, t_mask) = teacher.calls
    assert clean_mask is None and torch.equal(clean_wav, batch.waveforms) and torch.equal(masked_wav, batch.waveforms)
    mask, mask_len = distiller.draw_mask(lengths, 4)  # the same draw the step made
    assert t_mask is not None and t_mask.any() and torch.equal(t_mask[:, : mask.shape[1]], mask[:, : t_mask.shape[1]])

    with torch.no_grad():
        out = student(batch.waveforms, batch.lengths, mask=mask)
    expected_m = expected_u = 0.0
    for s, _t, w in distiller.pairs:
        p = out.projections[s]
        n = torch.minimum(out.hidden_lengths[s], lengths // 160)
        valid = torch.arange(p.shape[1])[None] < n[:, None]
        m, u = mask[:, : p.shape[1]] & valid, ~mask[:, : p.shape[1]] & valid
        d0, d1 = p.pow(2).mean(-1), (p - 1).pow(2).mean(-1)  # against the clean (0) / masked (1) teacher
        expected_m += w * float((d0 * m).sum() / m.sum())
        expected_u += w * float((d1 * u).sum() / u.sum())
    assert res.masked == pytest.approx(expected_m, rel=1e-5)  # same arithmetic, summation order may differ
    assert res.unmasked == pytest.approx(expected_u, rel=1e-5)
    assert float(res.total.detach()) == pytest.approx(expected_m + expected_u, rel=1e-5)


def test_plain_loss_without_masking() -> None:
    proj = {0: torch.ones(1, 4, 2)}
    res = distillation_loss(
        proj, [torch.tensor([3])], [torch.zeros(1, 4, 2)], torch.tensor([4]), [(0, 0, 1.0)], LossConfig()
    )
    assert float(res.total) == pytest.approx(1.0)


# -- teachers -----------------------------------------------------------------------------------------


def test_torchaudio_teacher_loads_from_a_saved_state_dict(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> None:
    recipe = loads_recipe(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus))
    teacher = load_teacher(recipe)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    teacher.train()
    assert not teacher.training
    wav, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    out = teacher(wav, lengths)
    ref, ref_len = teacher.model.extract_features(wav, lengths)
    assert len(out.hidden) == 3 and all(torch.equal(a, b) for a, b in zip(out.hidden, ref))  # exact: same ops
    assert torch.equal(out.lengths, ref_len)
    t_len, t_frames = teacher.mask_lengths(lengths)
    assert t_len.tolist() == ref_len.tolist() and t_frames == ref[0].shape[1]
    mask = torch.zeros(2, t_frames, dtype=torch.bool)
    mask[:, 5:15] = True
    masked = teacher(wav, lengths, mask=mask)
    assert not torch.allclose(masked.hidden[0], out.hidden[0])


def test_torchaudio_teacher_errors(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> None:
    bad = ta_teacher_yaml(ta_teacher_file).replace("encoder_num_heads", "encoder_heads")
    with pytest.raises(ConfigError, match="teacher.overrides.encoder_heads"):
        load_teacher(loads_recipe(recipe_text(bad, corpus)))
    wrong = ta_teacher_yaml(ta_teacher_file).replace("encoder_num_layers: 3", "encoder_num_layers: 4")
    with pytest.raises(planner.errors.WeightMappingError, match="does not fit"):
        load_teacher(loads_recipe(recipe_text(wrong, corpus)))


def test_planner_teacher_loads_its_own_state_dict(tmp_path: Path, corpus: Path) -> None:
    model = planner.materialize(planner.load(DATA / "tiny-teacher.yaml"))
    torch.save(model.state_dict(), tmp_path / "pt.pt")
    text = recipe_text(f"{{kind: architecture, arch: {DATA / 'tiny-teacher.yaml'}, checkpoint: pt.pt}}", corpus)
    teacher = load_teacher(loads_recipe(text, base_dir=str(tmp_path)))
    wav, lengths = torch.randn(1, 4000), torch.tensor([4000])
    out = teacher(wav, lengths)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden, model.eval()(wav, lengths).hidden_states))


def test_distill_proxy_reports_held_out_losses(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> None:
    from trainers import distill_proxy

    text = recipe_text(ta_teacher_yaml(ta_teacher_file), corpus).replace(
        f"train: [{corpus}]", f"train: [{corpus}], valid: {corpus}"
    )
    recipe = loads_recipe(text)
    values = list(
        distill_proxy(planner.load(DATA / "tiny-student.yaml"), recipe, steps=4, eval_every=2, eval_batches=2)
    )
    assert [s for s, _ in values] == [2, 4] and all(v > 0 for _, v in values)
    losses: list[float] = []
    again = list(distill_proxy(planner.load(DATA / "tiny-student.yaml"), recipe, steps=4, eval_every=2,
                               eval_batches=2, losses=losses))  # fmt: skip
    assert again == values  # recording the training losses changes nothing (the same ops in the same order)
    assert len(losses) == 4 and all(math.isfinite(v) and v > 0 for v in losses)
    with pytest.raises(ConfigError, match="data.valid"):
        next(
            distill_proxy(
                planner.load(DATA / "tiny-student.yaml"),
                loads_recipe(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus)),
                2,
            )
        )
