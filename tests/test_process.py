"""bundle.process: how a command-line run ends."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO


def test_quick_exit_freezes_at_exit_and_still_finalises_garbage_in_reference_cycles(tmp_path):
    marker = tmp_path / "finalised.txt"
    code = f"""
import atexit, gc, pathlib
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0))  # registered first: runs last
from bundle.process import quick_exit
quick_exit(); quick_exit()  # registered once however often it is called
class Closer:
    def __del__(self):
        pathlib.Path({str(marker)!r}).write_text("finalised")
gc.disable()  # no collection before exit: only the one at exit can find the cycle
holder = Closer()
holder.self = holder
del holder
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["frozen", "True"]
    assert marker.read_text() == "finalised"
