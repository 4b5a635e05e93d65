"""The test suite's own machinery: what keeps it within its time on 2 cores."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite")
def test_xdist_groups_take_effect(request):
    # Module fixtures meant to be built once per group are otherwise built on both workers; with pytest 9.2,
    # pytest-xdist 3.8's loadgroup silently stops grouping (pytest-xdist issue 1386).
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@suite"), (
            f"pytest-xdist's loadgroup has no effect with pytest {pytest.__version__}: "
            "install the versions of requirements-dev.txt (make setup)"
        )
