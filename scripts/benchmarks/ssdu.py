"""Supervised versus self-supervised (SSDU) training on the demo: step times in one process, and the report.

Usage, from the repository root::

    # step times: supervised (train + demo) and self-supervised (+ self_supervised.yaml) steps, interleaved
    python -m scripts.benchmarks.ssdu steps --supervised-data data/demo --ssl-data data/demo_undersampled
    # figures of finished runs: per-acceleration metrics of evaluations, and Γ-versus-SSIM rank agreement
    python -m scripts.benchmarks.ssdu report --sup-eval eval_sup --ssl-eval eval_ssl --ssl-runs runs_ssl

``steps`` times, for each recipe, the whole training iteration as the trainer runs it (batch preparation in the
main process, forward, loss, backward, clipping, AdamW step) and, separately, the compute alone (forward to
optimiser step on a prepared batch). The two recipes alternate step by step, so a change of machine load hits
both alike; every time is a median. ``report`` reads ``metrics.json`` of two ``evaluate.yaml`` runs and the
TensorBoard scalars of the self-supervised run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .harness import REPO, machine_info

CONFIGS = REPO / "configs"


def _parts(configs: list[str], data: Path, out: Path, threads: int) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update(
        {
            "bundle_root": str(REPO),
            "dataset_dir": str(data),
            "output_dir": str(out / "runs"),
            "ckpt_dir": str(out / "models"),
            "num_workers": 0,
            "num_threads": threads,
        }
    )
    torch.manual_seed(0)
    keys = ("train#dataset", "train#datalist", "network", "optimizer", "loss", "prepare_batch", "inferer", "device")
    parts = {k: parser.get_parsed_content(k) for k in keys}
    parts["clip_norm"] = parser.get_parsed_content("clip_norm")
    return parts


def _batches(parts: dict, n: int) -> list:
    """``n`` batch indices of one shape group (the first), as the sampler would hand them over."""
    data = parts["train#datalist"]
    group = data[0]["group"]
    return [i for i, item in enumerate(data) if item["group"] == group][:n]


def _compute(parts: dict, batch) -> None:
    net, opt = parts["network"], parts["optimizer"]
    inputs, label, args, kwargs = parts["prepare_batch"](batch, parts["device"])
    opt.zero_grad(set_to_none=True)
    pred = parts["inferer"](inputs, net, *args, **kwargs)
    loss = parts["loss"](pred, label).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), parts["clip_norm"])
    opt.step()


def _fetch(parts: dict, index: int, epoch: int) -> dict:
    from torch.utils.data import default_collate

    return default_collate([parts["train#dataset"][(epoch, index)]])


def steps(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        recipes = {
            "supervised": _parts(["train.yaml", "demo.yaml"], args.supervised_data, Path(tmp) / "sup", args.threads),
            "self_supervised": _parts(
                ["train.yaml", "demo.yaml", "self_supervised.yaml"], args.ssl_data, Path(tmp) / "ssl", args.threads
            ),
        }
        for parts in recipes.values():
            parts["network"].train()
        indices = {name: _batches(parts, args.repeats + args.warmup) for name, parts in recipes.items()}
        times = {name: {"step": [], "compute": [], "data": []} for name in recipes}
        for k in range(args.warmup + args.repeats):
            for name, parts in recipes.items():
                index = indices[name][k % len(indices[name])]
                t0 = time.perf_counter()
                batch = _fetch(parts, index, k)
                t1 = time.perf_counter()
                _compute(parts, batch)
                t2 = time.perf_counter()
                if k >= args.warmup:
                    times[name]["step"].append(t2 - t0)
                    times[name]["data"].append(t1 - t0)
                    times[name]["compute"].append(t2 - t1)
        shapes = {name: tuple(_fetch(p, indices[name][0], 0)["kspace_masked"].shape) for name, p in recipes.items()}
    result = {
        "machine": machine_info(torch.device("cpu")),
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "input_shape": {k: list(v) for k, v in shapes.items()},
    }
    for name, t in times.items():
        result[name] = {k: statistics.median(v) for k, v in t.items()}
    return result


# --------------------------------------------------------------------------------------------------- report


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def _per_acceleration(metrics_json: Path) -> dict[int, dict]:
    """Mean over modalities per acceleration of the reconstruction and zero-filled metrics."""
    rows = json.loads(metrics_json.read_text())["per_modality_acceleration"]
    out: dict[int, dict] = {}
    for acc in sorted({r["acceleration"] for r in rows}):
        chosen = [r for r in rows if r["acceleration"] == acc]
        out[acc] = {
            k: statistics.mean(r[k] for r in chosen) for k in chosen[0] if k.startswith(("ssim", "psnr", "nmse", "zf_"))
        }
    return out


def report(args: argparse.Namespace) -> dict:
    from scipy.stats import kendalltau, spearmanr

    result: dict = {}
    for name, folder in (("supervised", args.sup_eval), ("self_supervised", args.ssl_eval)):
        tables = json.loads((folder / "metrics.json").read_text())
        result[name] = {"overall": tables["overall"], "per_acceleration": _per_acceleration(folder / "metrics.json")}
    scalars = _scalars(args.ssl_runs)
    gamma = dict(scalars.get("val_gamma", []))
    ssim = dict(scalars.get("val_ssim", []))
    epochs = sorted(set(gamma) & set(ssim))
    if len(epochs) >= 2:
        g = [-gamma[e] for e in epochs]  # lower Γ error is better: rank by its negative
        s = [ssim[e] for e in epochs]
        result["ranking"] = {
            "epochs": epochs,
            "val_gamma": [gamma[e] for e in epochs],
            "val_ssim": s,
            "kendall_tau": float(kendalltau(g, s).statistic),
            "spearman_rho": float(spearmanr(g, s).statistic),
            "best_by_gamma": epochs[max(range(len(epochs)), key=lambda i: g[i])],
            "best_by_ssim": epochs[max(range(len(epochs)), key=lambda i: s[i])],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("steps", help="time supervised and self-supervised training steps in one process")
    st.add_argument("--supervised-data", type=Path, required=True, help="demo tree with FullSample files")
    st.add_argument("--ssl-data", type=Path, required=True, help="tree of undersampled files")
    st.add_argument("--repeats", type=int, default=10)
    st.add_argument("--warmup", type=int, default=2)
    st.add_argument("--threads", type=int, default=2, help="torch threads (the demo recipe: 2)")
    rp = sub.add_parser("report", help="figures of finished runs")
    rp.add_argument("--sup-eval", type=Path, required=True, help="evaluate.yaml output of the supervised model")
    rp.add_argument("--ssl-eval", type=Path, required=True, help="evaluate.yaml output of the self-supervised model")
    rp.add_argument("--ssl-runs", type=Path, required=True, help="output_dir (TensorBoard) of the self-supervised run")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = steps(args) if args.command == "steps" else report(args)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
