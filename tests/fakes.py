"""Helpers shared by the tests that run our client against the fake watsonx.ai."""

from __future__ import annotations

from granite_tuner import RateLimiter, RetryPolicy, WatsonxClient
from granite_tuner.testing import FakeWatsonx, ServerHandle

#: 60 labelled examples as JSONL: enough for the service's 50-example minimum.
TRAINING_JSONL = b"".join(
    b'{"input": "Comment: visit %d\\nSatisfaction:\\n", "output": "%d"}\n' % (n, n % 2)
    for n in range(60)
)


def watsonx_client(
    fake: FakeWatsonx,
    server: ServerHandle,
    *,
    retry: RetryPolicy,
    limiter: RateLimiter | None = None,
    api_key: str = "fake-test-api-key-123",
) -> WatsonxClient:
    """A client for `fake` served by `server`: API-key auth at the fake's IAM, its test CA."""
    return WatsonxClient(
        url=server.url,
        api_key=api_key,
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        retry=retry,
        rate_limiter=limiter,
    )


async def completed_model_id(client: WatsonxClient, base_model: str) -> str:
    """Upload, train with the low-level resources until done, and return the tuned model id."""
    asset = await client.assets.upload(TRAINING_JSONL, name="train.jsonl")
    training = await client.trainings.create(
        name="t", base_model=base_model, task_id="classification", data_asset_id=asset.id
    )
    while not training.is_finished:
        training = await client.trainings.get(training.id)
    assert training.model_id is not None
    return training.model_id
