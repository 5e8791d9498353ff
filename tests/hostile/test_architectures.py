"""Absurd and non-finite values in architecture files and the cost commands' arguments and side files.

Each case is refused with a non-zero exit, no traceback, the file (or option) and the field named, and
answers at once: nothing is built to find out that ``repeat: 100000000`` is too many.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import ARCH, refused
from planner.ir.kinds.base import MAX_CONV_LAYERS, MAX_HIDDEN, MAX_KERNEL, MAX_LAYERS, MAX_WIDTH

pytestmark = pytest.mark.usefixtures("hang_guard")  # each case must be refused within GUARD_S seconds

HARDWARE = (Path(__file__).resolve().parents[2] / "planner/cost/catalog/a100.yaml").read_text()
LAYER = "  - {kind: transformer, repeat: 2, heads: 2, ffn: 64}\n"
CONVS = "conv_layers: [[16, 10, 5], [32, 4, 4]]"


def _arch(tmp_path: Path, old: str, new: str) -> Path:
    assert old in ARCH
    path = tmp_path / "arch.yaml"
    path.write_text(ARCH.replace(old, new), encoding="utf-8")
    return path


CEILINGS = [
    ("repeat", LAYER, LAYER.replace("repeat: 2", "repeat: 100000000"), "layers[0].repeat", f"ceiling of {MAX_LAYERS}"),
    ("width", "width: 32", f"width: {10**12}", "width", f"ceiling of {MAX_WIDTH}"),
    ("ffn", LAYER, LAYER.replace("ffn: 64", f"ffn: {10**12}"), "layers[0].ffn", f"at most {MAX_HIDDEN}"),
    (
        "layers",
        LAYER,
        LAYER.replace("repeat: 2", "repeat: 1000") * 2,
        "layers",
        f"2000 layers (repeats expanded) exceed the ceiling of {MAX_LAYERS}",
    ),
    (
        "conv count",
        CONVS,
        'conv_layers: ["100000000 x [32, 2, 2]"]',
        "frontend[0].conv_layers[0]",
        f"exceed the ceiling of {MAX_CONV_LAYERS}",
    ),
    ("conv channels", CONVS, f"conv_layers: [[{10**9}, 10, 5]]", "frontend[0].conv_layers[0]", f"at most {MAX_WIDTH}"),
    (
        "kernel",
        LAYER,
        "  - {kind: conformer, heads: 2, ffn: 64, kernel: 1000000001}\n",
        "layers[0].kernel",
        f"at most {MAX_KERNEL}",
    ),
    ("sample rate", "sample_rate: 16000", f"sample_rate: {10**12}", "input.sample_rate", "at most 1000000"),
    (
        "head layers",
        LAYER,
        LAYER + "heads:\n  - {kind: projection_heads, width: 48, layers: '0-999999999999'}\n",
        "heads[0].layers",
        "layer 2 does not exist",
    ),
    (
        "head width",
        LAYER,
        LAYER + f"heads:\n  - {{kind: projection_heads, width: {10**15}}}\n",
        "heads[0].width",
        f"at most {MAX_WIDTH}",
    ),
    ("reuse digits", LAYER, LAYER + "reuse: " + "9" * 4000 + "by1\n", "reuse", "is not a reuse pattern"),
    (
        "conv digits",
        CONVS,
        'conv_layers: ["' + "9" * 4400 + ' x [32, 2, 2]"]',
        "frontend[0].conv_layers[0]",
        "is not 'N x [channels, kernel, stride]'",
    ),
]


@pytest.mark.parametrize("case", CEILINGS, ids=[c[0] for c in CEILINGS])
def test_absurd_sizes_are_refused_at_once(tmp_path, cli, case) -> None:
    _, old, new, field, message = case
    path = _arch(tmp_path, old, new)
    for command in ("validate", "cost"):
        refused(cli([command, path]), names=[f"{path}: {field}", message], code=2)


NON_FINITE = [".nan", ".inf", "-.inf"]


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_dropout(tmp_path, cli, value) -> None:
    path = _arch(tmp_path, "ffn: 64}", f"ffn: 64, dropout: {value}}}")
    refused(cli(["validate", path]), names=[f"{path}: layers[0].dropout", "not a finite number"], code=2)


def test_the_widest_model_is_priced_without_being_built(tmp_path, cli) -> None:
    path = _arch(tmp_path, "width: 32", f"width: {MAX_WIDTH}")
    result = cli(["cost", path, "--json"])
    assert result.code == 0, result.err
    assert '"params"' in result.out


SECONDS = ["nan", "inf", "-inf", "0", "-1", "1e300", "one"]


@pytest.mark.parametrize("value", SECONDS)
def test_seconds_must_be_a_finite_positive_length(tmp_path, cli, value) -> None:
    path = _arch(tmp_path, "width: 32", "width: 32")
    for command in ("cost", "show"):
        refused(cli([command, path, f"--seconds={value}"]), names=["--seconds", value], code=2)


LENGTHS = [
    ("superscript digit", "16000\n\u00b2\n", "line 2"),
    ("5000 digits", "9" * 5000 + "\n", "line 1"),
    ("zero", "0\n", "line 1"),
    ("negative", "-16000\n", "line 1"),
    ("nan", "nan\n", "line 1"),
    ("too long", f"{10**11}\n", "line 1"),
]


@pytest.mark.parametrize("case", LENGTHS, ids=[c[0] for c in LENGTHS])
def test_lengths_files(tmp_path, cli, case) -> None:
    _, text, line = case
    arch = _arch(tmp_path, "width: 32", "width: 32")
    lengths = tmp_path / "lengths.txt"
    lengths.write_text(text, encoding="utf-8")
    refused(cli(["cost", arch, "--lengths", lengths]), names=[f"{lengths}: {line}", "not a number of samples"], code=2)


def test_a_lengths_file_that_is_not_utf8(tmp_path, cli) -> None:
    arch = _arch(tmp_path, "width: 32", "width: 32")
    lengths = tmp_path / "lengths.txt"
    lengths.write_bytes(b"16000\n\xff\xfe\n")
    refused(cli(["cost", arch, "--lengths", lengths]), names=[str(lengths), "not UTF-8"], code=2)


HARDWARE_VALUES = [
    ("nan", "int8: 624.0e12", "int8: .nan", "peak_ops_per_s.int8"),
    (
        "inf",
        "memory_bandwidth_bytes_per_s: 2.039e12",
        "memory_bandwidth_bytes_per_s: .inf",
        "memory_bandwidth_bytes_per_s",
    ),
    ("nan string", "kernel_overhead_s: 0.0", "kernel_overhead_s: 'nan'", "kernel_overhead_s"),
    ("huge integer", "fp16: 312.0e12", f"fp16: {10**400}", "peak_ops_per_s.fp16"),
]


@pytest.mark.parametrize("case", HARDWARE_VALUES, ids=[c[0] for c in HARDWARE_VALUES])
def test_hardware_values_must_be_finite(tmp_path, cli, case) -> None:
    _, old, new, field = case
    assert old in HARDWARE
    arch = _arch(tmp_path, "width: 32", "width: 32")
    hw = tmp_path / "hw.yaml"
    hw.write_text(HARDWARE.replace(old, new), encoding="utf-8")
    refused(cli(["cost", arch, "--hardware", hw]), names=[f"{hw}: {field}", "not a finite number"], code=2)
