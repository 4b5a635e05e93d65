"""Smoke tests of the benchmark package scripts/benchmarks (tiny settings) and of its report and harness.

No timing is asserted: only that every section runs and reports sane, self-consistent values.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bundle.workflows import cpu_has_native_bf16
from scripts import benchmarks as benchmark
from scripts.benchmarks import report
from scripts.benchmarks.harness import child_argv
from scripts.benchmarks.model import build_network, network_parser

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


def test_network_and_precision_come_from_the_configs():
    """The paper, demo and PromptMR+ networks are the configs' network_def (no copies in the benchmark)."""
    paper = build_network(benchmark.parse_args([]), "meta")
    assert sum(p.numel() for p in paper.parameters()) == 81_528_317  # PromptMR v1 at the paper widths
    plus = build_network(benchmark.parse_args(["--network", "plus"]), "meta")
    assert sum(p.numel() for p in plus.parameters()) == 92_859_005  # the 2024 PromptMR+
    assert plus.network_args["model_version"] == "plus" and plus.network_args["n_history"] == 11

    args = benchmark.parse_args(["--tiny", "--cascades", "1", "--sens-chunk", "3", "--checkpointing"])
    demo = network_parser(benchmark.parse_args(["--tiny"]))
    tiny = build_network(args, "meta").network_args
    assert tiny["num_cascades"] == 1 and tiny["sens_chunk_size"] == 3 and tiny["use_checkpoint"] is True
    for key in ("n_feat0", "feature_dim", "sens_feature_dim", "prompt_size", "num_low_frequencies"):
        assert list(np.atleast_1d(tiny[key])) == list(np.atleast_1d(demo[f"network_def#{key}"])), key
    assert demo["network_def#num_cascades"] == 4  # without --cascades, the demo's own count

    assert benchmark.parse_args(["--amp", "bf16"]).amp == "bf16"
    with pytest.raises(SystemExit, match="fp16 needs a CUDA device"):
        benchmark.parse_args(["--amp", "fp16"])


def test_child_command_line_carries_the_options():
    args = benchmark.parse_args(
        [*TINY_ARGS, "--network", "plus", "--demo-modalities", "Cine,Mapping", "--amp", "bf16", "--subprocess"]
    )
    argv = child_argv(args, "infer", (48, 32), checkpointing=True, malloc_tuning=False)
    child = benchmark.parse_args(argv[2:])
    assert child.section_list == ["infer"] and child.sizes == [(48, 32)] and child.checkpointing
    assert not child.subprocess and not child.malloc_tuning
    for name in ("tiny", "network", "amp", "coils", "cascades", "data_workers", "data_nz", "demo_modalities"):
        assert getattr(child, name) == getattr(args, name), name


def test_report_tables_follow_their_spec():
    record = {
        "size": "48x32",
        "status": "ok",
        "by_coils": {
            "10": {"items_per_cpu_s": 4.0, "transform_ms": {"Load": 1.5}, "workers": {"0": {"slices_per_s": 2.5}}},
            "20": {
                "items_per_cpu_s": 2.0,
                "transform_ms": {"Load": 3.0, "Compress": 7.0},
                "workers": {"0": {"slices_per_s": 1.25}, "1": {"slices_per_s": 0.5}},
            },
        },
    }
    pipeline, per_core = (t for t in report.TABLES if t.section == "data")
    rows = report.table_rows(pipeline, [record, {"size": "1x1", "status": "failed"}])
    assert [(r["file coils"], r["workers"], r["slices_per_s"]) for r in rows] == [
        ("10", "0", 2.5),
        ("20", "0", 1.25),
        ("20", "1", 0.5),
    ]
    lines = report.render(per_core, [record])
    assert lines[1].startswith("Data pipeline per worker core")
    assert lines[2].split() == ["size", "file", "coils", "items/CPU", "s", "Compress", "Load"]
    assert lines[3].split() == ["48x32", "10", "4", "-", "1.5"] and lines[4].split() == ["48x32", "20", "2", "7", "3"]
    flops = next(t for t in report.TABLES if t.section == "flops")
    (line,) = report.render(flops, [{"size": "8x8", "status": "ok", "forward_flops_per_slice": 2e9}])[3:]
    assert line.split()[:2] == ["8x8", "2"]  # scaled to GFLOP
    assert report.report_lines({"train": []}, []) == []


def test_precision_section_times_fp32_and_bf16_on_the_same_input(tmp_path):
    out = tmp_path / "bench.json"
    benchmark.main([*TINY_ARGS, "--sections", "precision", "--repeats", "2", "--json", str(out)])
    (result,) = json.loads(out.read_text())["results"]["precision"]
    assert result["status"] == "ok" and result["native_bf16"] == cpu_has_native_bf16()
    assert result["num_cascades"] == 1
    for name in ("fp32", "bf16"):
        assert len(result[name]["times_s"]) == len(result[name]["cpu_times_s"]) == 2
        assert _positive(result[name]["per_slice_s"]) and _positive(result[name]["cpu_per_slice_s"])
    assert result["bf16_speedup"] == pytest.approx(result["fp32"]["per_slice_s"] / result["bf16"]["per_slice_s"])
    # bf16 autocast changes the image, but only by rounding.
    assert 1e-6 < result["rel_l2_image"] < 0.05


def test_demo_section_runs_the_inference_workflow_in_both_precisions(tmp_path):
    out = tmp_path / "bench.json"
    args = [*TINY_ARGS, "--sections", "demo", "--demo-size", "tiny", "--demo-modalities", "Mapping"]
    benchmark.main([*args, "--json", str(out)])
    (result,) = json.loads(out.read_text())["results"]["demo"]
    assert result["status"] == "ok" and result["native_bf16"] == cpu_has_native_bf16()
    assert result["configs"] == ["inference.yaml", "demo.yaml"]
    assert result["slices"] > 0 and result["files"] > 0
    for name in ("fp32", "bf16"):
        (run,) = result[name]["runs"]
        assert run["slices"] == result["slices"] and 0 < run["network_s"] <= run["run_s"]
        assert result[name]["network_per_slice_s"] == pytest.approx(run["network_s"] / run["slices"])
        assert _positive(result[name]["network_cpu_per_slice_s"])
    assert 0 < result["rel_l2_median"] <= result["rel_l2_worst"] < 0.05
