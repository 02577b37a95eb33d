"""An id given on the command line can never make a command act on another resource."""

from __future__ import annotations

import pytest

from tests.cli.conftest import RunCli, Watsonx


@pytest.mark.parametrize("command", ["status", "cancel", "attach"])
@pytest.mark.parametrize("bad_id", ["../deployments/d-1", "a/b", ".."])
def test_an_id_that_is_not_one_path_segment_exits_2_and_sends_nothing_for_it(
    cli: RunCli, watsonx: Watsonx, command: str, bad_id: str
) -> None:
    done = cli(command, bad_id, *watsonx.options)

    assert done.code == 2, done.err
    assert "not a valid id" in done.err
    paths = [request.path for request in watsonx.fake.requests]
    assert not any("deployments" in path or "trainings" in path for path in paths), paths
