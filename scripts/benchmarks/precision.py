"""Sections ``precision`` and ``demo``: inference time per slice in fp32 and in bf16 autocast, side by side.

* ``precision``: the configured network (``--network``, ``--tiny``, ``--cascades``) on one synthetic batch of
  ``--size``; fp32 and bf16 calls alternate for ``--repeats`` rounds after ``--warmup`` calls of each, on the same
  weights (seed 0) and input. Reports the median wall and CPU time (``process_time``: with ``--threads 1`` less
  sensitive to other load on a shared machine than wall time) per slice of each, the ratios, and the relative L2
  difference ``||x_bf16 - x_fp32|| / ||x_fp32||`` of the output images.
* ``demo``: the real inference path, ``configs/inference.yaml`` + ``configs/demo.yaml`` (the default demo network;
  ``--network plus`` adds ``configs/promptmr_plus.yaml``) run as ``monai.bundle run inference`` runs it
  (``ConfigWorkflow``), over the validation tree of a demo dataset written to a temporary folder. Each repeat is
  a fresh workflow, fp32 and bf16 alternating; the weights are ``--demo-model`` or, without it, the demo network
  at seed 0 saved as ``model.pt``. Reports the whole run's time and the network's share (wall and CPU time, by forward
  hooks), each per slice, and the relative L2 difference of every written NIfTI volume between the first fp32 and the
  first bf16 run (worst and median file).

Both set the precision explicitly (``resolve_precision(False)`` and ``resolve_precision(True, "bf16")``), whatever
the configs' default, and report whether this CPU computes bf16 natively (``cpu_has_native_bf16``): where it does
not, oneDNN emulates bf16 and the bf16 times say little.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.data.demo import make_demo_dataset
from bundle.io.nifti import load_nifti
from bundle.workflows import cpu_has_native_bf16, resolve_precision

from .harness import REPO, median, sync
from .model import CONFIGS, build_network, config_files, synthetic_batch

PRECISIONS = {"fp32": dict(amp=False, amp_dtype="auto"), "bf16": dict(amp=True, amp_dtype="bf16")}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (the bundle's own test on the CPU)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def relative_l2(x: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """``||x - reference|| / ||reference||`` in float64."""
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).double()
    reference = torch.as_tensor(np.asarray(reference) if isinstance(reference, np.ndarray) else reference).double()
    return float(torch.linalg.vector_norm(x - reference) / torch.linalg.vector_norm(reference))


def section_precision(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """fp32 against bf16 inference of one synthetic batch (``(B, F*C, H, W)``), interleaved."""
    net = build_network(args, device).eval()
    batch = synthetic_batch(args, *size, device)
    precisions = {name: resolve_precision(device=device, **kw) for name, kw in PRECISIONS.items()}

    def call(name: str) -> torch.Tensor:
        with torch.no_grad(), precisions[name].autocast():
            image, _ = net(batch["kspace_masked"], batch["mask"])
        sync(device)
        return image

    images = {}
    for name in precisions:
        for _ in range(args.warmup):
            call(name)
    times: dict[str, list[float]] = {name: [] for name in precisions}
    cpu: dict[str, list[float]] = {name: [] for name in precisions}
    for _ in range(args.repeats):  # alternating, so load on a shared machine hits both alike
        for name in precisions:
            c0, t0 = time.process_time(), time.perf_counter()
            images[name] = call(name)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out: dict = {
        "native_bf16": native_bf16(device),
        "network": args.network,
        "parameters": sum(p.numel() for p in net.parameters()),
        "num_cascades": net.network_args["num_cascades"],
        "batch": args.batch,
    }
    for name in precisions:
        out[name] = {
            "per_slice_s": median(times[name]) / args.batch,
            "cpu_per_slice_s": median(cpu[name]) / args.batch,
            "times_s": times[name],
            "cpu_times_s": cpu[name],
        }
    out["bf16_speedup"] = out["fp32"]["per_slice_s"] / out["bf16"]["per_slice_s"]
    out["bf16_speedup_cpu"] = out["fp32"]["cpu_per_slice_s"] / out["bf16"]["cpu_per_slice_s"]
    out["rel_l2_image"] = relative_l2(images["bf16"].float(), images["fp32"])
    return out


def _demo_model(args: argparse.Namespace, files: list[str], path: Path) -> Path:
    """``--demo-model``, or the configs' ``network_def`` at seed 0 saved to ``path``."""
    if args.demo_model is not None:
        return args.demo_model
    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = str(REPO)
    if args.cascades is not None:
        parser["network_def#num_cascades"] = args.cascades
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _inference_run(args, files: list[str], data: Path, model: Path, output: Path, precision: str) -> dict:
    """One ``inference`` run of the configs as ``monai.bundle run`` does it; times the run and the network."""
    overrides = {
        "bundle_root": str(REPO),
        "dataset_dir": str(data),
        "output_dir": str(output),
        "model_path": str(model),
        "skip_existing": False,
        "modalities": args.demo_modalities,
        "writer#progress": False,
        **PRECISIONS[precision],
    }
    if args.cascades is not None:
        overrides["network_def#num_cascades"] = args.cascades
    workflow = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), workflow_type="infer", **overrides
    )
    workflow.initialize()
    resolved = workflow.parser.get_parsed_content("precision")
    if resolved.name != precision:
        raise RuntimeError(f"inference config resolved to {resolved.name}, not the requested {precision}")
    network = workflow.parser.get_parsed_content("network")
    clock = {"network_s": 0.0, "network_cpu_s": 0.0, "slices": 0, "start": 0.0, "start_cpu": 0.0}

    def before(module, inputs) -> None:
        clock["slices"] += inputs[0].shape[0]
        clock["start"], clock["start_cpu"] = time.perf_counter(), time.process_time()

    def after(module, inputs, output) -> None:
        clock["network_s"] += time.perf_counter() - clock["start"]
        clock["network_cpu_s"] += time.process_time() - clock["start_cpu"]

    hooks = [network.register_forward_pre_hook(before), network.register_forward_hook(after)]
    t0 = time.perf_counter()
    workflow.run()
    run_s = time.perf_counter() - t0
    workflow.finalize()
    for hook in hooks:
        hook.remove()
    slices = clock["slices"]
    if not slices:
        raise RuntimeError(f"the inference run over {data} reconstructed nothing (no validation files?)")
    return {
        "run_s": run_s,
        "network_s": clock["network_s"],
        "slices": slices,
        "run_per_slice_s": run_s / slices,
        "network_per_slice_s": clock["network_s"] / slices,
        "network_cpu_per_slice_s": clock["network_cpu_s"] / slices,
    }


def compare_outputs(a: Path, b: Path) -> dict:
    """Relative L2 difference of every NIfTI volume under ``b/nifti`` against the same file under ``a/nifti``."""
    diffs = {}
    for path in sorted((a / "nifti").rglob("*.nii.gz")):
        rel = path.relative_to(a)
        other = b / rel
        if not other.is_file():
            raise FileNotFoundError(f"{other}: written by the {a.name} run but not by the {b.name} run")
        diffs[str(rel)] = relative_l2(np.asarray(load_nifti(other).dataobj), np.asarray(load_nifti(path).dataobj))
    if not diffs:
        raise FileNotFoundError(f"no NIfTI volume under {a / 'nifti'}")
    worst = max(diffs, key=diffs.get)
    return {
        "files": len(diffs),
        "rel_l2_worst": diffs[worst],
        "rel_l2_worst_file": worst,
        "rel_l2_median": median(list(diffs.values())),
    }


def section_demo(args: argparse.Namespace, device: torch.device) -> dict:
    """fp32 against bf16 runs of the inference workflow on a generated demo validation tree."""
    if device.type != "cpu":
        raise SystemExit("--sections demo runs the inference configs on the CPU only")
    files = config_files(args.network, base="inference.yaml")
    files.insert(1, str(CONFIGS / "demo.yaml"))
    tmp = Path(tempfile.mkdtemp(prefix="hypercmr_bench_demo_"))
    try:
        t0 = time.perf_counter()
        data = tmp / "data"
        make_demo_dataset(data, seed=0, size=args.demo_size)
        generate_s = time.perf_counter() - t0
        model = _demo_model(args, files, tmp / "model.pt")
        runs: dict[str, list[dict]] = {name: [] for name in PRECISIONS}
        for i in range(args.repeats):  # alternating fresh workflows, as separate user runs would be
            for name in PRECISIONS:
                runs[name].append(_inference_run(args, files, data, model, tmp / f"out_{name}_{i}", name))
        out: dict = {
            "native_bf16": native_bf16(device),
            "configs": [Path(f).name for f in files],
            "demo_size": str(args.demo_size),
            "weights": str(args.demo_model) if args.demo_model else "demo network at seed 0 (untrained)",
            "generate_s": generate_s,
            "slices": runs["fp32"][0]["slices"],
        }
        for name, rs in runs.items():
            out[name] = {
                "run_per_slice_s": median([r["run_per_slice_s"] for r in rs]),
                "network_per_slice_s": median([r["network_per_slice_s"] for r in rs]),
                "network_cpu_per_slice_s": median([r["network_cpu_per_slice_s"] for r in rs]),
                "runs": rs,
            }
        out["bf16_speedup_network"] = out["fp32"]["network_per_slice_s"] / out["bf16"]["network_per_slice_s"]
        out["bf16_speedup_run"] = out["fp32"]["run_per_slice_s"] / out["bf16"]["run_per_slice_s"]
        cpu = [out[name]["network_cpu_per_slice_s"] for name in ("fp32", "bf16")]
        out["bf16_speedup_network_cpu"] = cpu[0] / cpu[1]
        out.update(compare_outputs(tmp / "out_fp32_0", tmp / "out_bf16_0"))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
