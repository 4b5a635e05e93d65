"""Render an HTML report (``eval/report.html`` or an inference ``report.html``) to a PNG with headless Chromium.

Usage, from the repository root::

    python scripts/screenshot_report.py --report eval/report.html --out report.png [--width 1400 --height 3000]

Needs a ``chromium`` (or ``chromium-browser`` / ``google-chrome``) binary on PATH, e.g.
``apt-get install chromium`` on Debian/Ubuntu. The page is opened as a local file with networking off, so the
screenshot also proves the report needs nothing from elsewhere. Exit status: 0 on success, 2 when no browser is
found or the report is missing, 1 when the browser fails or writes no image.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def find_browser() -> str | None:
    """Path of the first Chromium-like browser on PATH, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 3000, browser: str | None = None) -> Path:
    """Write a ``width`` x ``height`` PNG of ``report`` to ``out``; raises ``RuntimeError`` if it cannot."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError(f"no Chromium found on PATH (looked for {', '.join(BROWSERS)}); apt-get install chromium")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # needed when running as root (containers, CI)
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # No networking at all: a self-contained report renders the same.
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            f"--window-size={int(width)},{int(height)}",
            f"--screenshot={out}",
            Path(report).resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", required=True, type=Path, help="the report.html to render")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"{args.report}: no such report", file=sys.stderr)
        return EXIT_USAGE
    if find_browser() is None:
        print("no Chromium on PATH; install it with: apt-get install chromium", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = screenshot(args.report, args.out, args.width, args.height)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
