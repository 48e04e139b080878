"""The test suite's own setup, as `make test` runs it."""

import pytest


@pytest.mark.xdist_group("grouping_check")
def test_loadgroup_sends_a_group_to_one_worker(request):
    """`make test` runs `--dist loadgroup` so that the tests sharing one expensive fixture (the
    fresh runtime's 1.9 GB environment) run in one worker. pytest 9.2 with pytest-xdist 3.8
    silently stopped grouping (pytest-dev/pytest-xdist#1386): both workers built the
    environment, doubling the disk a run needs. xdist marks a grouped test by suffixing its
    id with the group's name; without the suffix the group is ignored."""
    # On a worker, xdist sets option.loadgroup from the controller's --dist (dist itself is "no").
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks pytest-xdist's --dist loadgroup, which `make test` uses")
    assert request.node.nodeid.endswith("@grouping_check"), (
        f"{request.node.nodeid}: --dist loadgroup ignores xdist_group with pytest "
        f"{pytest.__version__}; pin the versions in requirements/ci.txt"
    )
