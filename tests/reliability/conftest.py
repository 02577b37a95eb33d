"""The fake watsonx.ai the reliability tests run against, served over HTTPS on loopback.

A test module that needs other knobs defines its own `fake`; `server` serves whichever it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from granite_tuner.testing import FakeWatsonx, ServerHandle


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=1, deployment_polls=1)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle
