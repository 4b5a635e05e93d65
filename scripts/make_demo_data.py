"""Write the synthetic CMRxRecon2024 (or 2023) demo dataset (numerical phantom, official layout and file format).

Usage, from the repository root (no installation needed)::

    python scripts/make_demo_data.py --root data/demo [--seed 0] [--size small|medium|real|<scale>]
        [--layout 2024|2023|2025|ismrmrd] [--overwrite]

The tree goes to ``<root>/ChallengeData/MultiCoil``; ``<root>/DEMO_DATASET.txt`` marks it as synthetic.
``--layout 2023`` writes the CMRxRecon2023 layout (Cine and Mapping, ``AccFactor04/08/10`` folders).
``--layout ismrmrd`` writes scanner raw data instead: ``<root>/<patient>/<series>.h5`` ISMRMRD files (fully
sampled and R=4 cine with 2x readout oversampling and noise readouts, an oblique one, an asymmetric echo, a T1
map); ``--size`` and the patient counts do not apply to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root must precede site-packages on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundle.data.demo import SIZES, make_demo_dataset  # noqa: E402
from bundle.data.demo_ismrmrd import make_ismrmrd_demo  # noqa: E402
from bundle.data.index import LAYOUTS  # noqa: E402


def _size(value: str) -> str | float:
    if value.lower() in SIZES:
        return value.lower()
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(SIZES)} or a scale factor, got {value!r}"
        ) from None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="output folder (ChallengeData/ is created inside)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same arrays")
    parser.add_argument(
        "--size",
        type=_size,
        default="small",
        help="small (default, CPU demo), medium (about half the real matrix), real (several GB), tiny, or a "
        "scale factor in (0, 1]",
    )
    parser.add_argument("--train-patients", type=int, default=None, help="override the number of training patients")
    parser.add_argument("--val-patients", type=int, default=None, help="override the number of validation patients")
    parser.add_argument(
        "--layout",
        choices=(*LAYOUTS, "ismrmrd"),
        default="2024",
        help="challenge release whose folder layout and variable names to write (default 2024), or ismrmrd for a "
        "folder of synthetic scanner raw data",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <root>/ChallengeData")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    start = time.perf_counter()
    if args.layout == "ismrmrd":
        try:
            files = make_ismrmrd_demo(args.root, seed=args.seed, overwrite=args.overwrite)
        except (FileExistsError, NotADirectoryError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        total = sum(p.stat().st_size for p in files)
        print(f"wrote {args.root}")
        print(
            f"{len(files)} ISMRMRD files, {total / 1e6:.1f} MB, in {time.perf_counter() - start:.1f} s "
            f"(seed {args.seed}, layout ismrmrd)"
        )
        return 0
    try:
        out = make_demo_dataset(
            args.root,
            seed=args.seed,
            size=args.size,
            overwrite=args.overwrite,
            num_train_patients=args.train_patients,
            num_val_patients=args.val_patients,
            layout=args.layout,
        )
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    files = [p for p in out.rglob("*.mat") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {out}")
    print(
        f"{len(files)} .mat files, {total / 1e6:.1f} MB, in {elapsed:.1f} s "
        f"(seed {args.seed}, size {args.size}, layout {args.layout})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
