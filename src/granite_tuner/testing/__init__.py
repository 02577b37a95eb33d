"""A fake watsonx.ai for tests: IAM, the data platform and the ML service in one local server.

It speaks the REST protocol that IBM's official ``ibm-watsonx-ai`` SDK speaks (a contract
test drives it with that SDK): API-key exchange, data-asset upload, prompt-tuning trainings,
deployments and text generation, with state machines advanced by polling, a rate limit, token
expiry and injectable faults. Everything it received is recorded for assertions:

    from granite_tuner.testing import FakeWatsonx, Fault

    fake = FakeWatsonx(project_id="p-1", training_polls=3, rate_limit=8)
    fake.faults.add(Fault("status", method="POST", path=r"/text/generation$", status=503))
    with fake.serve(tls=True) as server:                   # HTTPS with a throw-away test CA
        client = httpx.Client(base_url=server.url, verify=server.client_ssl_context())
        token = client.post("/identity/token", data={"apikey": "k",
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey"}).json()["access_token"]
        ...                                                # or run your own client against it
    assert fake.count("POST", r"^/ml/v4/trainings$") == 1

The default text-generation answer is ``"1"`` or ``"0"``, chosen by the CRC32 of the input
(stable across runs; `default_answer` computes it, so a test can predict scores); pass
``answer=lambda call: ...`` to decide yourself.
"""

from ._fake import FakeWatsonx
from ._faults import Fault
from ._generation import default_answer
from ._models import FakeModel
from ._server import ConnectionDropped, ServerHandle
from ._standalone import environment_for, run_until_stopped
from ._state import GenerationCall, RecordedRequest

FakeWatsonxServer = ServerHandle
"""What ``FakeWatsonx.serve()`` yields: the server's ``url``, ``ca_cert_path`` and
``client_ssl_context()`` (the same class as `ServerHandle`)."""

__all__ = [
    "ConnectionDropped",
    "FakeModel",
    "FakeWatsonx",
    "FakeWatsonxServer",
    "Fault",
    "GenerationCall",
    "RecordedRequest",
    "ServerHandle",
    "default_answer",
    "environment_for",
    "run_until_stopped",
]
