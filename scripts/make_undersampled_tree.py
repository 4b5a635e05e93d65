"""Write a tree of undersampled files alone from a CMRxRecon2024 tree (e.g. the demo): a site without references.

Usage, from the repository root::

    python scripts/make_undersampled_tree.py --source data/demo --out data/demo_undersampled [--patterns Uniform]

For every TrainingSet ``FullSample`` file and each of its official masks of the patterns, the undersampled k-space
(``kus`` = k-space ⊙ mask) and the mask are written in the release layout (``UnderSample_Task<k>``, ``Mask_Task<k>``);
no ``FullSample`` folder is written. The source tree is only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundle.data.undersampled import derive_undersampled_tree  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="CMRxRecon2024 tree with FullSample files")
    parser.add_argument("--out", required=True, type=Path, help="output folder (ChallengeData/ is created inside)")
    parser.add_argument("--patterns", nargs="+", default=["Uniform"], help="mask patterns to use (default Uniform)")
    args = parser.parse_args(argv)
    if (args.out / "ChallengeData").exists():
        print(f"error: {args.out / 'ChallengeData'} exists", file=sys.stderr)
        return 2
    written = derive_undersampled_tree(args.source, args.out, args.patterns)
    print(f"wrote {len(written)} undersampled files under {args.out / 'ChallengeData' / 'MultiCoil'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
