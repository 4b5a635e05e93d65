"""Speed and memory benchmark of HyperCMR training and inference: the command-line entry point.

    python scripts/benchmark.py --size 64x128 --cascades 2
    python scripts/benchmark.py --help

The code is the package ``scripts/benchmarks/`` (its docstring lists the sections); ``docs/benchmarks.md`` has
the method and the results.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: the repository root must precede site-packages on the path.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.benchmarks import main  # noqa: E402

if __name__ == "__main__":
    main()
