"""The README's path: `llmservice serve` with its default model, the built-in tiny-reasoner,
and the deepseek_r1 reasoning parser, driven by the `openai` client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from server_harness import ServerProcess, start_server

QUESTION = [{"role": "user", "content": "What is 12 + 35?"}]


@pytest.fixture(scope="module")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        "builtin:tiny-reasoner",
        tmp_path_factory.mktemp("builtin"),
        "--reasoning-parser",
        "deepseek_r1",
    )
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def client(builtin_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=builtin_server.url + "/v1", api_key="unused", max_retries=0)


def test_the_default_model_is_listed_under_its_builtin_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["builtin:tiny-reasoner"]


def test_the_answer_and_its_reasoning_are_separate(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="builtin:tiny-reasoner", messages=QUESTION, temperature=0
    )
    message = response.choices[0].message
    assert message.content == "47"
    assert message.reasoning_content and "12" in message.reasoning_content
    details = response.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < response.usage.completion_tokens


def test_the_stream_carries_the_same_split(client: openai.OpenAI) -> None:
    one_shot = client.chat.completions.create(
        model="builtin:tiny-reasoner", messages=QUESTION, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="builtin:tiny-reasoner",
            messages=QUESTION,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning == one_shot.choices[0].message.reasoning_content
    assert content == one_shot.choices[0].message.content
    assert chunks[-1].usage.model_dump() == one_shot.usage.model_dump()
