"""Import PromptMR v1 / HyperCMR weights into this bundle: ``DIR/model.pt`` plus the overlay ``DIR/network.yaml``.

Usage, from the repository root (no installation needed)::

    python scripts/import_weights.py SRC --out-dir DIR [--overwrite]

SRC may be a PromptMR v1 Lightning checkpoint (``promptmr-12cascades-epoch=11-step=258576.ckpt``), a HyperCMR
training checkpoint (``checkpoint.pth.tar``, ``model_best.pth.tar``), a plain state dict, or this bundle's own
``model.pt`` / ``models/checkpoints/checkpoint_e*_i*.pt``. The file is read with ``weights_only=True``; one that
needs arbitrary pickled objects is refused. Every key and shape is checked against the architecture read from the
file. On success the script prints the inference command that uses the imported model.

Exit status: 0 on success, 1 when the file cannot be imported, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root must precede site-packages on the path.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bundle.errors import BundleError  # noqa: E402
from bundle.networks.pretrained import NETWORK_OVERLAY_NAME, load_pretrained, save_network_overlay  # noqa: E402

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
    start = time.perf_counter()
    try:
        state, network_args = load_pretrained(args.src)
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    from bundle.workflows.checkpoint import atomic_torch_save

    atomic_torch_save(state, model)
    save_network_overlay(overlay, network_args, source=os.fspath(args.src))
    elapsed = time.perf_counter() - start
    params = sum(v.numel() for v in {v.data_ptr(): v for v in state.values()}.values())
    print(f"imported {args.src} in {elapsed:.1f} s: {network_args['num_cascades']} cascades, {params:,} parameters")
    print(f"wrote {model}")
    print(f"wrote {overlay}")
    print("reconstruct a dataset with:")
    print(f"  {inference_command(model, overlay)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
