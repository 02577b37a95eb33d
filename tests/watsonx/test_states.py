"""States: the service's values become the package's `TrainingState` / `DeploymentState`.

A state this version does not know must not crash anything and must read as "still going":
it becomes `running` (trainings) or `initializing` (deployments), and the service's own value
is kept in `service_state`.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from granite_tuner import RetryPolicy, RunFinished, StateChanged, Tuner, TuningEvent, WatsonxClient
from granite_tuner.backends.base import deployment_state
from granite_tuner.backends.watsonx.models import Deployment, Training
from granite_tuner.backends.watsonx.serving import deployment_to_info
from granite_tuner.backends.watsonx.tuning import training_to_run
from granite_tuner.runs import KNOWN_STATES, training_state


def _training(state: str) -> dict[str, Any]:
    return {
        "metadata": {"id": "t-1", "name": "run", "tags": ["prompt_tuning"]},
        "entity": {
            "status": {"state": state},
            "prompt_tuning": {"base_model": {"model_id": "m"}},
            "training_data_references": [
                {"type": "data_asset", "location": {"href": "/v2/assets/a-1", "id": "a-1"}}
            ],
        },
    }


def _deployment(state: str) -> dict[str, Any]:
    return {"metadata": {"id": "d-1", "name": "dep"}, "entity": {"status": {"state": state}}}


def test_every_documented_training_state_is_kept_as_it_is() -> None:
    for state in KNOWN_STATES:
        run = training_to_run(Training.from_wire(_training(state)))
        assert (run.state, run.service_state) == (state, None)
    assert training_to_run(Training.from_wire(_training("queued"))).data_refs == ("a-1",)


def test_an_unknown_training_state_reads_as_running_and_keeps_the_service_value() -> None:
    run = training_to_run(Training.from_wire(_training("suspended_by_admin")))
    assert (run.state, run.service_state) == ("running", "suspended_by_admin")
    assert not run.is_finished
    assert training_state(None) == ("running", "None")


def test_deployment_states_legacy_names_and_unknown_ones() -> None:
    assert deployment_state("ready") == ("ready", None)
    assert deployment_state("DEPLOY_SUCCESS") == ("ready", None)
    assert deployment_state("DEPLOY_FAILED") == ("failed", None)
    assert deployment_state("DEPLOY_IN_PROGRESS") == ("initializing", None)
    assert deployment_to_info(Deployment.from_wire(_deployment("DEPLOY_SUCCESS"))).is_ready
    info = deployment_to_info(Deployment.from_wire(_deployment("warming_up")))
    assert (info.state, info.service_state) == ("initializing", "warming_up")
    assert not info.is_ready
    assert not info.has_failed


@pytest.mark.anyio
async def test_the_tuner_waits_through_an_unknown_state(caplog: pytest.LogCaptureFixture) -> None:
    states = iter(["queued", "suspended_by_admin", "suspended_by_admin", "resuming", "completed"])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/ml/v4/trainings/t-1"
        return httpx.Response(200, json=_training(next(states)))

    client = WatsonxClient(
        url="https://us-south.ml.cloud.ibm.com",
        token="a-static-test-token",
        project_id="p-1",
        retry=RetryPolicy(max_attempts=1),
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    events: list[TuningEvent] = []
    async with client:
        with caplog.at_level(logging.WARNING, logger="granite_tuner"):
            result = await Tuner.attach(
                client, run_id="t-1", poll_interval=(0.001, 0.001), on_event=events.append
            ).run()

    assert result.state == "completed"
    changes = [(e.state, e.service_state) for e in events if isinstance(e, StateChanged)]
    assert changes == [
        ("queued", None),
        ("running", "suspended_by_admin"),
        ("running", "resuming"),
        ("completed", None),
    ]
    assert isinstance(events[-1], RunFinished)
    unknown = [r for r in caplog.records if "unknown to this version" in r.getMessage()]
    assert len(unknown) == 2  # once per unknown state, not once per poll
