"""Streaming from the local server: pieces leave as they are decoded and add up to the answer."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from granite_tuner.backends.local import LocalClient
from granite_tuner.backends.local._serving import StreamEvent
from granite_tuner.generation import GenerationParameters

pytestmark = pytest.mark.anyio

PROMPTS = ["the dog was great .", "the groomer was rude and late .", "review : the cat"]
FORCED = GenerationParameters(decoding_method="greedy", min_new_tokens=12, max_new_tokens=12)


async def test_a_stream_adds_up_to_the_generated_answer(tiny_model_dir: Path, home: Path) -> None:
    model = str(tiny_model_dir)
    async with LocalClient(model, home=home) as client:
        for prompt in PROMPTS:
            expected = await client.generate(prompt, model_id=model, parameters=FORCED)
            events = [
                event
                async for event in client.generate_stream(prompt, model_id=model, parameters=FORCED)
            ]
            assert "".join(event.text for event in events) == expected.text
            assert events[-1].result == expected
            assert all(event.result is None for event in events[:-1])
            assert len(events) > 2  # more than one piece, then the result


async def test_the_first_piece_leaves_before_the_batch_ends(
    tiny_model_dir: Path, home: Path
) -> None:
    model = str(tiny_model_dir)
    async with LocalClient(model, home=home) as client:
        seen_batches_at_first_piece: int | None = None
        async for _event in client.generate_stream(PROMPTS[0], model_id=model, parameters=FORCED):
            if seen_batches_at_first_piece is None:
                seen_batches_at_first_piece = client.serving_stats().batches
        # A batch is counted when it has finished: the first piece came while it still ran.
        assert seen_batches_at_first_piece == 0
        assert client.serving_stats().batches == 1


async def test_streamed_and_plain_requests_share_a_batch(tiny_model_dir: Path, home: Path) -> None:
    model = str(tiny_model_dir)
    async with LocalClient(model, home=home) as client:
        client.serving_batch_window = 0.2  # room for both to join one batch
        plain: dict[str, str] = {}
        streamed: list[StreamEvent] = []

        async def ask() -> None:
            plain["answer"] = (
                await client.generate(PROMPTS[1], model_id=model, parameters=FORCED)
            ).text

        async def stream() -> None:
            async for event in client.generate_stream(
                PROMPTS[2], model_id=model, parameters=FORCED
            ):
                streamed.append(event)

        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            group.start_soon(stream)
        assert client.serving_stats().largest_batch == 2
        alone = await client.generate(PROMPTS[2], model_id=model, parameters=FORCED)
        assert "".join(event.text for event in streamed) == alone.text
        assert (
            plain["answer"]
            == (await client.generate(PROMPTS[1], model_id=model, parameters=FORCED)).text
        )


async def test_stop_sequences_are_never_streamed_past(tiny_model_dir: Path, home: Path) -> None:
    model = str(tiny_model_dir)
    async with LocalClient(model, home=home) as client:
        full = await client.generate(PROMPTS[0], model_id=model, parameters=FORCED)
        words = full.text.split()
        assert len(words) >= 3
        stop = " ".join(words[1:3])
        for include in (True, False):
            parameters = GenerationParameters(
                decoding_method="greedy",
                max_new_tokens=12,
                stop_sequences=(stop,),
                include_stop_sequence=include,
            )
            expected = await client.generate(PROMPTS[0], model_id=model, parameters=parameters)
            assert expected.stop_reason == "stop_sequence"
            pieces = [
                event.text
                async for event in client.generate_stream(
                    PROMPTS[0], model_id=model, parameters=parameters
                )
            ]
            assert "".join(pieces) == expected.text


async def test_leaving_a_stream_early_abandons_it(tiny_model_dir: Path, home: Path) -> None:
    model = str(tiny_model_dir)
    long = GenerationParameters(decoding_method="greedy", min_new_tokens=200, max_new_tokens=200)
    async with LocalClient(model, home=home) as client:
        stream = client.generate_stream(PROMPTS[0], model_id=model, parameters=long)
        first = await anext(stream)
        assert first.text
        await stream.aclose()
        # the server goes on answering others
        answer = await client.generate(PROMPTS[1], model_id=model, parameters=FORCED)
        assert answer.generated_token_count == 12
