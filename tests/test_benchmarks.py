"""benchmarks/gpu_resampler.py runs end to end on the CPU (--smoke) and its rows are right.

The script is the GPU benchmark; on a GPU-less machine --smoke runs every row kind that the
CPU can run (eager, compiled with aot_eager, flamingo-pytorch, the family members) at tiny
sizes. These tests read its table: every expected row is there, every timed row's error
against the float64 reference is finite and within its TOLERANCES bound, and the targets
table names a value for each target. No test looks at a time.
"""

import math
import pathlib
import subprocess
import sys

import pytest
import torch

import refimpl
from refimpl import interop

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
SHAPES = ("1x576", "32x576", "32x2304")  # the target shapes; the full smoke run takes too long here
DTYPES = ("bfloat16", "float16", "float32")
FAMILY = ("Kosmos-2", "Evolla", "Qwen-VL", "MiniCPM-V", "Idefics2")
KEY = "torch GPU vs float64 reference"


def bound(dtype):
    """The error bound of a row in `dtype`."""
    return refimpl.TOLERANCES[(dtype, KEY)]


@pytest.fixture(scope="module")
def smoke_output():
    """stdout of one reduced --smoke run (one timing pass, the three target shapes)."""
    command = [sys.executable, "gpu_resampler.py", "--smoke", "--runs", "1", "--shapes", ",".join(SHAPES)]
    done = subprocess.run(command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output):
    """The main table: (workload, shape, dtype, implementation) -> the remaining cells."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 9 and cells[0] != "workload":
            rows[tuple(cells[:4])] = cells[4:]
    return rows


def test_smoke_has_every_cpu_row(smoke_output):
    rows = table_rows(smoke_output)
    expected = {
        ("Flamingo", shape, dtype, name)
        for shape in SHAPES
        for dtype in DTYPES
        for name in ("refimpl.torch eager", "flamingo-pytorch eager")
    }
    expected |= {("Flamingo", shape, "bfloat16", "refimpl.torch compiled") for shape in SHAPES}
    expected |= {(member, "2x36", dtype, "refimpl.torch eager") for member in FAMILY for dtype in DTYPES}
    expected |= {(member, "2x36", "bfloat16", "refimpl.torch compiled") for member in FAMILY}
    assert set(rows) == expected


def test_smoke_skips_the_cuda_only_rows_and_says_so(smoke_output):
    assert not any("CUDA graph" in key[3] or "reduce-overhead" in key[3] for key in table_rows(smoke_output))
    assert (
        "Skipped on the CPU (CUDA only): refimpl.torch CUDA graph, refimpl.torch compiled (reduce-overhead)"
        in smoke_output
    )


def test_smoke_errors_are_finite_and_within_bounds(smoke_output):
    rows = table_rows(smoke_output)
    timed = {key: cells for key, cells in rows.items() if not cells[0].startswith("compile failed")}
    # one row fails, by design: MiniCPM-V's images each have their own grid, which needs eager mode
    failed = ("MiniCPM-V", "2x36", "bfloat16", "refimpl.torch compiled")
    assert rows.keys() - timed.keys() == {failed}
    assert "grid must be one (h, w) pair of ints for the whole batch under torch.compile" in rows[failed][0]
    for (workload, shape, dtype, name), cells in timed.items():
        error = float(cells[3])
        assert math.isfinite(error) and error <= bound(dtype), (workload, shape, dtype, name, error)
        assert cells[4] == "yes", (workload, shape, dtype, name, cells)
        assert float(cells[0]) > 0


def test_smoke_targets_table_has_a_value_for_each_target(smoke_output):
    targets = smoke_output.split("The issue's targets")[1].split("The family members")[0].splitlines()
    lines = [line for line in targets if line.startswith("| ") and not line.startswith("| target")]
    assert len(lines) == 4
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1].startswith("refimpl.torch"), line
        assert cells[2].startswith("**") and cells[4] == "not judged (smoke)", line


def test_family_configs_are_what_each_peer_can_express(monkeypatch):
    """Each member's config (smoke sizes, the same switches) is accepted by its peer's to_<peer>."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_resampler

    exporters = {
        "Kosmos-2": interop.to_kosmos2,
        "Evolla": interop.to_evolla,
        "Qwen-VL": interop.to_qwen_vl,
        "MiniCPM-V": interop.to_minicpm_v,
        "Idefics2": interop.to_idefics2,
    }
    for smoke in (True, False):
        assert set(gpu_resampler.family(smoke)) == set(FAMILY)
    for name, member in gpu_resampler.family(True).items():
        state = exporters[name](member.config, refimpl.init_resampler(member.config, seed=0))
        assert state, name


def test_family_sizes_are_the_published_modules(monkeypatch):
    """At full size, each member's config counts as many parameters as the real module (built
    on the meta device: shapes, no memory), as notebook 11 counts them."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_resampler
    from transformers import EvollaConfig, Kosmos2Config
    from transformers.models.evolla.modeling_evolla import EvollaSequenceCompressorResampler
    from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler
    from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2ImageToTextProjection

    from refimpl.interop.hub_standins import MiniCPMVResampler, QwenVLResampler

    with torch.device("meta"):
        modules = {
            "Kosmos-2": Kosmos2ImageToTextProjection(Kosmos2Config()),
            "Evolla": EvollaSequenceCompressorResampler(EvollaConfig()),
            "Qwen-VL": QwenVLResampler(grid_size=16, embed_dim=4096, num_heads=32, kv_dim=1664),
            "MiniCPM-V": MiniCPMVResampler(num_queries=64, embed_dim=3584, num_heads=28, kv_dim=1152),
            "Idefics2": Idefics2PerceiverResampler(Idefics2PerceiverConfig()),
        }
    for name, member in gpu_resampler.family(False).items():
        ours = sum(math.prod(shape) for shape in refimpl.param_shapes(member.config).values())
        # Qwen-VL's stand-in stores its fixed sin-cos table as a parameter; refimpl computes it
        theirs = sum(p.numel() for key, p in modules[name].named_parameters() if key != "pos_embed")
        assert ours == theirs, (name, ours, theirs)


def test_a_wrong_dtype_is_refused_by_name(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_resampler

    with pytest.raises(SystemExit):
        gpu_resampler.parse_args(["--dtypes", "bfloat16,float8"])
    message = capsys.readouterr().err
    assert "--dtypes" in message and "float8" in message and "float16" in message
