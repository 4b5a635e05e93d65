"""Import PromptMR v1 / PromptMR+ / HyperCMR weights: ``DIR/model.pt`` plus the overlay ``DIR/network.yaml``.

Usage, from the repository root (no installation needed)::

    python scripts/import_weights.py SRC --out-dir DIR [--overwrite]

SRC may be a PromptMR v1 Lightning checkpoint (``promptmr-12cascades-epoch=11-step=258576.ckpt``), a PromptMR+
Lightning checkpoint (``promptmr-plus-epoch=11-step=337764.ckpt``, ``model_version: promptmr_v2``), a HyperCMR
training checkpoint (``checkpoint.pth.tar``, ``model_best.pth.tar``), a plain state dict, or this bundle's own
``model.pt`` / ``models/checkpoints/checkpoint_e*_i*.pt``. The file is read with ``weights_only=True``; one that
needs arbitrary pickled objects is refused. Every key and shape is checked against the architecture read from the
file. ``network.yaml`` also sets the ACS handling of the pipeline the weights come from (``acs_source``,
``num_low_frequencies``; ``docs/design.md``, "ACS width: where it comes from"), or leaves it to the base config
when the file does not say. On success the script prints the inference command that uses the imported model.

Exit status: 0 on success, 1 when the file cannot be imported, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root must precede site-packages on the path.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bundle.errors import BundleError  # noqa: E402
from bundle.networks.pretrained import NETWORK_OVERLAY_NAME, import_pretrained, save_network_overlay  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="checkpoint or state dict to import")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for model.pt and network.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace model.pt / network.yaml already in DIR")
    return parser.parse_args(argv)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def inference_command(model: Path, overlay: Path) -> str:
    """The command that reconstructs a dataset with the imported weights."""
    configs = _shown(REPO / "configs" / "inference.yaml")
    return (
        f"python -m monai.bundle run inference --config_file \"['{configs}','{_shown(overlay)}']\" "
        f"--model_path {_shown(model)} --dataset_dir /path/to/CMRxRecon --output_dir /path/to/results"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    model, overlay = args.out_dir / "model.pt", args.out_dir / NETWORK_OVERLAY_NAME
    if args.src.resolve() == model.resolve():
        print(f"error: {args.src}: the source is the output {model}; choose another --out-dir", file=sys.stderr)
        return EXIT_USAGE
    existing = [str(p) for p in (model, overlay) if p.exists()]
    if existing and not args.overwrite:
        print(f"error: {', '.join(existing)} already exist(s); pass --overwrite to replace", file=sys.stderr)
        return EXIT_USAGE
    if not logging.getLogger().handlers:  # the importer's own log lines (format, renamed keys, ACS) to stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        weights = import_pretrained(args.src)
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    from bundle.workflows.checkpoint import atomic_torch_save

    state, network_args = weights.state, weights.network_args
    atomic_torch_save(state, model)
    save_network_overlay(overlay, weights.overlay_args(), source=os.fspath(args.src))
    elapsed = time.perf_counter() - start
    params = sum(v.numel() for v in {v.data_ptr(): v for v in state.values()}.values())
    version = "PromptMR+" if network_args["model_version"] == "plus" else "PromptMR v1"
    print(
        f"imported {args.src} in {elapsed:.1f} s: {version}, {network_args['num_cascades']} cascades, "
        f"{params:,} parameters"
    )
    print(f"wrote {model}")
    print(f"wrote {overlay}")
    print("reconstruct a dataset with:")
    print(f"  {inference_command(model, overlay)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
