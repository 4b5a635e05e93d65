"""Smoke tests of scripts/benchmark.py (tiny settings) and of the numerical equivalence of its hot-spot fixes.

No timing is asserted: only that every section runs and reports sane, self-consistent values.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bundle.mri import fft2c, ifft2c
from bundle.networks import NormPromptUnet
from scripts import benchmark

TINY_ARGS = [
    "--tiny",
    "--size",
    "48x32",
    "--coils",
    "4",
    "--cascades",
    "1",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--threads",
    "1",
    "--data-files",
    "1",
    "--data-nz",
    "2",
    "--data-batches",
    "2",
    "--data-workers",
    "0,1",
    "--case-slices",
    "4",
]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_parse_sizes():
    assert benchmark.parse_sizes(["64x128", "32x64, 48X32"]) == [(64, 128), (32, 64), (48, 32)]
    assert benchmark.parse_sizes(None) == [(64, 128)]
    with pytest.raises(Exception, match="HxW"):
        benchmark.parse_sizes(["64by128"])


def test_tiny_run_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    benchmark.main([*TINY_ARGS, "--json", str(out)])
    report = json.loads(out.read_text())

    machine = report["machine"]
    for key in ("cpu_model", "logical_cores", "torch", "torch_threads", "device_name"):
        assert machine[key] not in (None, "")
    assert machine["torch_threads"] == 1
    results = report["results"]
    assert set(results) == set(benchmark.SECTIONS)
    assert all(len(v) == 1 and v[0]["status"] == "ok" and v[0]["size"] == "48x32" for v in results.values())

    train = results["train"][0]
    assert _positive(train["step_s"]) and _positive(train["slices_per_s"]) and _positive(train["peak_mem_gb"])
    assert train["slices_per_s"] == pytest.approx(1 / train["step_s"])
    assert set(train["phases_s"]) == {"forward", "loss", "backward", "optimizer"}
    assert sum(train["phases_s"].values()) <= train["step_s"] * 1.01

    infer = results["infer"][0]
    assert _positive(infer["per_slice_s"]) and _positive(infer["case_s"]) and infer["case_slices"] == 4
    assert infer["case_method"] in ("timed directly", "extrapolated: per-slice time x 4")

    data = results["data"][0]
    assert data["items"] == 12 * 2 and set(data["workers"]) == {"0", "1"}
    for rate in data["workers"].values():
        assert rate["slices"] == 2 and _positive(rate["slices_per_s"])
        assert rate["batch_shape"] == [1, 5 * 4, 48, 32]
    assert "LoadCMRSliced" in data["transform_ms"]

    assert _positive(results["loss"][0]["loss_fwd_bwd_s"])
    flops = results["flops"][0]
    assert flops["train_flops_per_slice"] > flops["forward_flops_per_slice"] > 0
    assert flops["loss_flops_per_slice"] > 0

    (summary,) = report["summary"]
    assert 0 < summary["loss_share"] < 1
    assert _positive(summary["pipeline_over_train"]) and _positive(summary["train_flop_per_s"])


def test_subprocess_turns_memory_limit_into_a_result(tmp_path):
    """A child that passes --mem-limit-gb is reported, not propagated (stand-in for an out-of-memory kill)."""
    out = tmp_path / "bench.json"
    args = [*TINY_ARGS, "--sections", "loss", "--subprocess", "--mem-limit-gb", "0.01", "--json", str(out)]
    benchmark.main(args)
    (result,) = json.loads(out.read_text())["results"]["loss"]
    assert result["status"] == "memory_limit" and result["returncode"] == benchmark.MEMORY_LIMIT_EXIT


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 16, 10), (2, 9, 7), (3, 8, 5)])
def test_checkerboard_fft_matches_shifted_fft(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.complex64)
    for inverse, fn in ((False, fft2c), (True, ifft2c)):
        torch.testing.assert_close(fn(x), benchmark._shift_fft2(x, inverse), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=1e-5, atol=1e-6)
    # TorchScript compiles both branches of the size test.
    torch.testing.assert_close(torch.jit.script(fft2c)(x), fft2c(x))


def test_channels_last_unet_matches_nchw():
    torch.manual_seed(0)
    net = NormPromptUnet(4, 4, n_feat0=4, feature_dim=(6, 8, 10), prompt_dim=(2, 4, 6), len_prompt=(2, 2, 2))
    x = torch.randn(3, 2, 20, 12, dtype=torch.complex64)
    results = []
    for channels_last in (False, True):
        net.zero_grad()
        with benchmark.hotspot_fixes(channels_last=channels_last):
            y = net(x)
        torch.view_as_real(y).square().sum().backward()
        assert y.is_contiguous()
        results.append((y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5, msg=name)


def test_data_section_reports_per_core_figures_at_ten_and_twenty_coils(tmp_path):
    out = tmp_path / "bench.json"
    args = [*TINY_ARGS, "--sections", "data", "--coils", "10", "--data-coils", "10,20", "--data-workers", "0"]
    benchmark.main([*args, "--data-items", "2", "--json", str(out)])
    (data,) = json.loads(out.read_text())["results"]["data"]
    assert set(data["by_coils"]) == {"10", "20"}
    for coils, result in data["by_coils"].items():
        assert result["file_coils"] == int(coils) and _positive(result["items_per_cpu_s"])
        assert result["workers"]["0"]["batch_shape"] == [1, 5 * 10, 48, 32]  # compressed to 10 coils
        assert {"LoadCMRSliced", "ApplyMaskd", "MakeTargetd", "CoilCompressd"} <= set(result["transform_ms"])
    # Only the 20-coil files need compressing, so only there does the compression cost measurable time.
    assert (
        data["by_coils"]["20"]["transform_ms"]["CoilCompressd"]
        > data["by_coils"]["10"]["transform_ms"]["CoilCompressd"]
    )
