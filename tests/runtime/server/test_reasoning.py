"""The reasoning state machine: streaming at any split equals the one-shot result."""

from __future__ import annotations

import itertools

import pytest

from llmservice.runtime.server.reasoning import REASONING_PARSERS, ReasoningParser

TEXT = "<think>a</think>b"


def _run(parser: ReasoningParser, pieces: list[str], finish_reason: str = "stop") -> tuple:
    streamed_reasoning, streamed_content = "", ""
    for piece in pieces:
        delta = parser.feed(piece)
        streamed_reasoning += delta.reasoning
        streamed_content += delta.content
    delta = parser.finish()
    streamed_reasoning += delta.reasoning
    streamed_content += delta.content
    result = parser.result(finish_reason)
    return streamed_reasoning, streamed_content, result


def _splits(text: str, cuts: int) -> list[list[str]]:
    out = []
    for points in itertools.combinations(range(1, len(text)), cuts):
        bounds = (0, *points, len(text))
        out.append([text[a:b] for a, b in itertools.pairwise(bounds)])
    return out


@pytest.mark.parametrize("name", sorted(REASONING_PARSERS))
@pytest.mark.parametrize("prompt", ["<|assistant|>", "<|assistant|><think>\n"])
def test_every_split_point_matches_the_one_shot_result(name: str, prompt: str) -> None:
    syntax = REASONING_PARSERS[name]
    text = TEXT if "<think>" not in prompt else "a</think>b"
    one_shot = _run(syntax.new_parser(prompt), [text])
    assert one_shot[:2] == ("a", "b")
    assert (one_shot[2].reasoning, one_shot[2].content) == ("a", "b")
    pieces_lists = _splits(text, 1) + _splits(text, 2) + [list(text)]
    for pieces in pieces_lists:
        streamed = _run(syntax.new_parser(prompt), pieces)
        assert streamed[:2] == one_shot[:2], pieces
        assert streamed[2].reasoning == "a" and streamed[2].content == "b", pieces


def test_only_a_possible_partial_tag_is_held_back() -> None:
    parser = REASONING_PARSERS["qwen3"].new_parser("")
    assert parser.feed("<th").reasoning == parser.feed("").content == ""
    assert parser.feed("ink>abc</").reasoning == "abc"  # "</" may start "</think>"
    delta = parser.feed("b>x")  # it did not
    assert (delta.reasoning, delta.content) == ("</b>x", "")


def test_qwen3_without_tags_is_all_content() -> None:
    reasoning, content, result = _run(
        REASONING_PARSERS["qwen3"].new_parser("user: hi"), ["Hel", "lo"]
    )
    assert (reasoning, content) == ("", "Hello")
    assert (result.reasoning, result.content, result.reasoning_tokens) == (None, "Hello", 0)


def test_a_partial_open_tag_at_the_end_is_released_as_text() -> None:
    _, content, result = _run(REASONING_PARSERS["qwen3"].new_parser(""), ["<th"])
    assert content == "<th" and result.content == "<th"


def test_deepseek_r1_reasons_from_the_first_token_without_an_open_tag() -> None:
    reasoning, content, result = _run(
        REASONING_PARSERS["deepseek_r1"].new_parser(""), ["x", "</think>", "y"]
    )
    assert (reasoning, content) == ("x", "y")
    assert (result.reasoning, result.content, result.reasoning_tokens) == ("x", "y", 2)


def test_a_prompt_that_closed_thinking_starts_in_content() -> None:
    parser = REASONING_PARSERS["deepseek_r1"].new_parser("<think>\n\n</think>\n\n")
    _, content, result = _run(parser, ["plain"])
    assert content == "plain" and result.reasoning is None


@pytest.mark.parametrize("finish_reason", ["stop", "abort"])
def test_stopping_without_close_tag_makes_the_text_the_answer(finish_reason: str) -> None:
    parser = REASONING_PARSERS["qwen3"].new_parser("<think>\n")
    _, _, result = _run(parser, ["only", " thoughts"], finish_reason)
    assert (result.reasoning, result.content, result.reasoning_tokens) == (None, "only thoughts", 0)


def test_length_finish_leaves_an_unclosed_block_as_reasoning() -> None:
    parser = REASONING_PARSERS["qwen3"].new_parser("")
    _, _, result = _run(parser, ["<think>", "still", " thinking"], "length")
    assert (result.reasoning, result.content, result.reasoning_tokens) == (
        "still thinking",
        None,
        3,
    )


def test_reasoning_tokens_count_the_tokens_up_to_the_close_tag() -> None:
    parser = REASONING_PARSERS["qwen3"].new_parser("")
    _, _, result = _run(parser, ["<", "think>", "a", "b", "</think>", "c", "d"])
    assert result.reasoning_tokens == 5
    assert (result.reasoning, result.content) == ("ab", "cd")
