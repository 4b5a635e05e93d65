"""``python -m scripts.benchmarks``: the same as ``python scripts/benchmark.py``."""

from .cli import main

main()
