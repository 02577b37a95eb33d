"""What the contract tests share: the prompts, the settings, and the in-process answers."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from granite_tuner.backends.local import LocalClient
from granite_tuner.deployment import Deployment
from tests.server.conftest import Served

PROMPTS = ["the dog was great .", "the groomer was rude and late .", "the salon is clean"]
MAX_TOKENS = 6
GREEDY = {"decoding_method": "greedy", "max_new_tokens": MAX_TOKENS}


@dataclass(frozen=True)
class Expected:
    """The in-process `Deployment`'s greedy answers, by run name then prompt."""

    answers: dict[str, dict[str, str]]


def in_process_answers(served: Served, run_names: list[str]) -> Expected:
    async def main() -> Expected:
        answers: dict[str, dict[str, str]] = {}
        async with LocalClient(served.model, home=served.home) as client:
            for name in run_names:
                tuned = await Deployment.create(client, served.run_ids[name])
                answers[name] = {
                    prompt: (await tuned.generate(prompt, GREEDY)).text for prompt in PROMPTS
                }
            base = {p: (await client.generate(p, model_id=served.model, parameters=GREEDY)).text
                    for p in PROMPTS}  # fmt: skip
            answers["base"] = base
        return Expected(answers)

    return anyio.run(main)
