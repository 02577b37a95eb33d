"""A served home with four tiny tuned runs, and servers on loopback (HTTPS with a test CA).

The runs are really tuned (one quick epoch on the tiny model of tests/tiny_model.py), so the
server deploys them exactly as it deploys a user's runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from granite_tuner.backends.local import LocalClient
from granite_tuner.data import LabelledSet
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.server import RunningServer, ServeConfig, serve_in_thread
from tests.tiny_model import review_examples

API_KEY = "test-serve-key-0123456789"
RUN_NAMES = ("reviews_a", "reviews_b", "reviews_c", "reviews_d")
VERBALIZER = "review : {{input}} satisfied ?"


@dataclass(frozen=True)
class Served:
    home: Path
    model: str
    run_ids: dict[str, str]  # name -> run id


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    ca: Path


@pytest.fixture(scope="session")
def served_home(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    home = tmp_path_factory.mktemp("serve-home")
    data = LabelledSet(examples=tuple(review_examples(24)))

    async def tune() -> dict[str, str]:
        ids: dict[str, str] = {}
        async with LocalClient(str(tiny_model_dir), home=home) as client:
            for seed, name in enumerate(RUN_NAMES):
                ref = await client.upload_training_data(data, name=name)
                run = await client.start_tuning(
                    name=name,
                    base_model=str(tiny_model_dir),
                    data_ref=ref,
                    parameters=PromptTuningParameters(
                        num_epochs=1,
                        batch_size=8,
                        learning_rate=0.1 + seed / 10,
                        num_virtual_tokens=4,
                        init_method="random",
                        verbalizer=VERBALIZER,
                    ),
                )
                with anyio.fail_after(120):
                    while not (run := await client.get_tuning_run(run.id)).is_finished:  # noqa: ASYNC110  # polls the run
                        await anyio.sleep(0.01)
                assert run.state == "completed", run.failure_message
                ids[name] = run.id
        return ids

    return Served(home, str(tiny_model_dir), anyio.run(tune))


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = Tls(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(paths.cert))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(paths.cert), append=True)
    cert.private_key_pem.write_to_path(str(paths.key))
    ca.cert_pem.write_to_path(str(paths.ca))
    return paths


def config(served: Served, tls: Tls | None = None, **overrides: object) -> ServeConfig:
    settings: dict[str, object] = {
        "model": served.model,
        "home": served.home,
        "runs": (*RUN_NAMES[:3], f"{RUN_NAMES[3]}=fourth"),
        "port": 0,
        "api_keys": (SecretStr(API_KEY),),
    }
    if tls is not None:
        settings.update(ssl_certfile=tls.cert, ssl_keyfile=tls.key)
    settings.update(overrides)
    return ServeConfig.model_validate(settings)


@pytest.fixture(scope="module")
def server(served_home: Served, tls: Tls) -> Iterator[RunningServer]:
    with serve_in_thread(config(served_home, tls)) as running:
        yield running
