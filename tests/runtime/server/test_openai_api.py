"""The API as the official `openai` client sees it (sync, async, streaming), on a real server.

The tiny checkpoint answers every chat with `<think>a</think>b` (tags split across tokens) and
continues `<|go|>` with `Hello,World!` (see bigram_model.py), so answers are known exactly.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from bigram_model import HELLO_CHAIN, REASONING_CHAIN
from server_harness import API_KEY, ServerProcess

MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]
CHAT_TOKENS = len(REASONING_CHAIN) - 1  # the chain after <|assistant|>, EOS included
REASONING_TOKENS = 7  # "<" "think" ">" "a" "</" "thi" "nk>"


@pytest.fixture(scope="module")
def client(api_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_server.url + "/v1", api_key=API_KEY, max_retries=0)


def _prompt_tokens(server: ServerProcess, **body: object) -> int:
    status, _, result = server.post("/tokenize", {"model": "tiny", **body})
    assert status == 200
    return int(result["count"])


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_retrieve_model_is_the_entry_of_the_list(client: openai.OpenAI) -> None:
    model = client.models.retrieve("tiny")
    listed = client.models.list().data[0]
    assert model.id == "tiny"
    assert model.model_dump(exclude={"created"}) == listed.model_dump(exclude={"created"})


def test_retrieve_unknown_model_is_404_and_needs_the_key(
    client: openai.OpenAI, api_server: ServerProcess
) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-4o")
    assert error.value.code == "model_not_found"
    assert "'gpt-4o' does not exist; this server serves tiny" in error.value.message
    keyless = openai.OpenAI(base_url=api_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        keyless.models.retrieve("tiny")


def test_chat_answer_is_split_into_reasoning_and_content(
    client: openai.OpenAI, api_server: ServerProcess
) -> None:
    response = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0)
    choice = response.choices[0]
    assert choice.message.reasoning_content == "a"
    assert choice.message.content == "b"
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.completion_tokens == CHAT_TOKENS
    assert response.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    assert response.usage.prompt_tokens == _prompt_tokens(api_server, messages=MESSAGES)
    assert response.usage.total_tokens == response.usage.prompt_tokens + CHAT_TOKENS


def test_chat_stream_matches_the_one_shot_answer_and_sends_usage_once(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == CHAT_TOKENS
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    deltas = [c.choices[0] for c in chunks[:-1]]
    assert all(d.index == 0 for d in deltas)
    assert deltas[0].delta.role == "assistant"
    reasoning = "".join(getattr(d.delta, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.delta.content or "" for d in deltas)
    assert (reasoning, content) == ("a", "b")
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


def test_a_template_that_opens_think_starts_the_answer_in_reasoning(
    client: openai.OpenAI,
) -> None:
    response = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        extra_body={"chat_template_kwargs": {"open_think": True}},
    )
    message = response.choices[0].message
    assert (message.reasoning_content, message.content) == ("a", "b")


def test_an_answer_cut_by_length_stays_reasoning(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_completion_tokens=5
    )
    choice = response.choices[0]
    assert choice.finish_reason == "length"
    assert (choice.message.reasoning_content, choice.message.content) == ("a</", None)
    assert response.usage.completion_tokens == 5


def test_continuous_usage_stats_grow_with_every_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
    )
    chunks = list(stream)
    counts = [c.usage.completion_tokens for c in chunks]
    assert counts == sorted(counts) and counts[-1] == CHAT_TOKENS
    assert all(c.usage is not None for c in chunks)


def test_completions_take_text_and_token_prompts_in_batches(
    client: openai.OpenAI, api_server: ServerProcess
) -> None:
    go_ids = api_server.post("/tokenize", {"prompt": "<|go|>"})[2]["tokens"]
    for prompt in (["<|go|>", "say <|go|>"], [go_ids, go_ids], go_ids):
        response = client.completions.create(
            model="tiny", prompt=prompt, n=2, max_tokens=10, temperature=0
        )
        num_prompts = 1 if prompt is go_ids else 2
        assert sorted(c.index for c in response.choices) == list(range(2 * num_prompts))
        assert {c.text for c in response.choices} == {"Hello,World!"}
        assert response.usage.completion_tokens == 2 * num_prompts * (len(HELLO_CHAIN) - 1)
    assert response.usage.prompt_tokens == len(go_ids)


def test_completion_stream_has_indexed_chunks_and_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="tiny",
        prompt="<|go|>",
        n=2,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    chunks = list(stream)
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {0: "Hello,World!", 1: "Hello,World!"}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_stop_strings_cut_the_text_and_report_the_reason(client: openai.OpenAI) -> None:
    response = client.completions.create(model="tiny", prompt="<|go|>", stop=["World"])
    choice = response.choices[0]
    assert (choice.text, choice.finish_reason) == ("Hello,", "stop")
    assert choice.model_extra["stop_reason"] == "World"


def test_echo_prepends_the_prompt(client: openai.OpenAI) -> None:
    response = client.completions.create(model="tiny", prompt="say <|go|>", echo=True)
    assert response.choices[0].text == "say <|go|>Hello,World!"
    stream = client.completions.create(model="tiny", prompt="say <|go|>", echo=True, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == "say <|go|>Hello,World!"


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI) -> None:
    """OpenAI's scoring idiom: the echoed prompt's tokens come with their logprobs (None for the
    first), then the completion's, offsets running through both."""
    response = client.completions.create(
        model="tiny", prompt="say <|go|>", echo=True, logprobs=2, max_tokens=2
    )
    choice = response.choices[0]
    assert choice.text == "say <|go|>Hello,"
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == "say <|go|>Hello,"
    num_prompt = response.usage.prompt_tokens
    assert len(logprobs.tokens) == num_prompt + 2
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(lp <= 0.0 for lp in logprobs.token_logprobs[1:])
    assert all(len(top) <= 2 for top in logprobs.top_logprobs[1:])
    assert logprobs.text_offset == [
        sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))
    ]
    # The bigram model is sure of "Hello" after "<|go|>" and of "," after "Hello".
    assert logprobs.token_logprobs[num_prompt] == pytest.approx(0.0, abs=1e-3)
    stream = client.completions.create(
        model="tiny", prompt="say <|go|>", echo=True, logprobs=2, max_tokens=2, stream=True
    )
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    assert "".join(c.text for c in chunks) == choice.text
    streamed = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    assert streamed == logprobs.tokens


def test_chat_logprobs_have_openai_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=3
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert [entry.token for entry in content[:4]] == ["<", "think", ">", "a"]
    for entry in content:
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob <= 0.0


def test_completion_logprobs_have_openai_shape(client: openai.OpenAI) -> None:
    response = client.completions.create(model="tiny", prompt="<|go|>", logprobs=2)
    logprobs = response.choices[0].logprobs
    assert logprobs.tokens == ["Hello", ",", "World", "!", "<|end|>"]
    assert len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 5
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == [0, 5, 6, 11, 12]


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        response = client.completions.create(
            model="tiny", prompt="quick fox", n=2, seed=1234, temperature=1.0, max_tokens=12
        )
        return [c.text for c in sorted(response.choices, key=lambda c: c.index)]

    assert sample() == sample()


def test_logit_bias_bans_and_forces_tokens(
    client: openai.OpenAI, api_server: ServerProcess
) -> None:
    status, _, tokenized = api_server.post(
        "/tokenize", {"prompt": "Hello,", "add_special_tokens": False}
    )
    assert status == 200
    hello, comma = tokenized["tokens"]
    forced = client.completions.create(
        model="tiny", prompt="<|go|>", max_tokens=3, temperature=0.0,
        logit_bias={str(comma): 100},
    )  # fmt: skip
    assert forced.choices[0].text == ",,,"
    banned = client.completions.create(
        model="tiny", prompt="<|go|>", max_tokens=3, logit_bias={str(hello): -100}
    )
    assert not banned.choices[0].text.startswith("Hello")
    chat = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=2, logit_bias={str(comma): 100}
    )
    assert chat.choices[0].message.content == ",,"


def test_vllm_extensions_are_honoured(client: openai.OpenAI) -> None:
    response = client.completions.create(
        model="tiny", prompt="<|go|>", max_tokens=9, extra_body={"ignore_eos": True}
    )
    assert response.usage.completion_tokens == 9
    assert response.choices[0].finish_reason == "length"
    response = client.completions.create(
        model="tiny",
        prompt="<|go|>",
        max_tokens=12,
        extra_body={"min_tokens": 7, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1},
    )
    assert response.usage.completion_tokens >= 7
    response = client.completions.create(
        model="tiny",
        prompt="<|go|>",
        max_tokens=50,
        extra_body={"max_completion_tokens": 2, "ignore_eos": True},
    )
    assert response.usage.completion_tokens == 2


def test_async_client_serves_concurrent_requests(api_server: ServerProcess) -> None:
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api_server.url + "/v1", api_key=API_KEY)
        async with client:
            responses = await asyncio.gather(
                *(
                    client.completions.create(model="tiny", prompt="<|go|>", max_tokens=8)
                    for _ in range(8)
                )
            )
        return [r.choices[0].text for r in responses]

    assert asyncio.run(run()) == ["Hello,World!"] * 8


def test_async_streaming_chat(api_server: ServerProcess) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=api_server.url + "/v1", api_key=API_KEY)
        async with client:
            stream = await client.chat.completions.create(
                model="tiny", messages=MESSAGES, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run()) == "b"
