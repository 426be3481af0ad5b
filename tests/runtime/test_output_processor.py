"""OutputProcessor fed with hand-made core outputs: stop strings, deltas, n > 1 fan-in."""

from __future__ import annotations

import pytest

from llmservice import SamplingParams
from llmservice.runtime.engine_core import EngineCoreOutput
from llmservice.runtime.output_processor import OutputProcessor, ProcessedOutputs
from llmservice.runtime.outputs import TokenLogprobs
from llmservice.runtime.tokenizer import Tokenizer

TEXT = "the quick brown fox"


def _feed(
    processor: OutputProcessor, core_id: str, tokens: list[int], last_reason: str | None = None
) -> list[ProcessedOutputs]:
    """One core output per token; the last one carries `last_reason`."""
    steps = []
    for i, token in enumerate(tokens):
        reason = last_reason if i == len(tokens) - 1 else None
        steps.append(
            processor.process_outputs([EngineCoreOutput(core_id, [token], finish_reason=reason)])
        )
    return steps


def _run(tokenizer: Tokenizer, params: SamplingParams) -> tuple[list[ProcessedOutputs], str]:
    processor = OutputProcessor(tokenizer)
    processor.add_request("r", None, [1], params)
    steps = _feed(processor, "r", tokenizer.encode(TEXT, add_special_tokens=False), "length")
    return steps, "".join(d.text for step in steps for d in step.deltas)


def test_stop_string_across_token_boundaries(tokenizer: Tokenizer) -> None:
    # "ck bro" spans the tokens "ick", " b", "r", "o".
    steps, streamed = _run(tokenizer, SamplingParams(stop=["ck bro", "zzz"]))
    finished = [output for step in steps for output in step.finished]
    assert len(finished) == 1
    completion = finished[0].outputs[0]
    assert completion.text == "the qui" == streamed
    assert (completion.finish_reason, completion.stop_reason) == ("stop", "ck bro")
    # The core must abort the request, once, in the step where the stop string completed.
    aborts = [step.abort_ids for step in steps]
    assert [i for ids in aborts for i in ids] == ["r"]
    stop_step = aborts.index(["r"])
    assert all(not step.deltas for step in steps[stop_step + 1 :])  # later outputs are ignored


def test_text_that_may_start_a_stop_string_is_held_back(tokenizer: Tokenizer) -> None:
    steps, streamed = _run(tokenizer, SamplingParams(stop=["quick!"]))
    tokens = tokenizer.encode(TEXT, add_special_tokens=False)
    sent = ""
    for i, step in enumerate(steps[:-1]):
        sent += "".join(d.text for d in step.deltas)
        # The last len("quick!") - 1 characters could still grow into the stop string.
        text_so_far = tokenizer.decode(tokens[: i + 1])
        assert sent == text_so_far[: max(len(text_so_far) - 5, 0)]
    # Everything is sent once the request finishes (by length: no stop string hit).
    assert streamed == TEXT
    assert steps[-1].finished[0].outputs[0].finish_reason == "length"


def test_include_stop_string_and_min_tokens(tokenizer: Tokenizer) -> None:
    _, streamed = _run(tokenizer, SamplingParams(stop="ck bro", include_stop_str_in_output=True))
    assert streamed == "the quick bro"
    # The only "e" is in the first token ("the"): with min_tokens=4 it is never a stop.
    _, streamed = _run(tokenizer, SamplingParams(stop="e"))
    assert streamed == "th"
    steps, streamed = _run(tokenizer, SamplingParams(stop="e", min_tokens=4))
    assert streamed == TEXT
    assert steps[-1].finished[0].outputs[0].finish_reason == "length"


def test_n_samples_fan_in(tokenizer: Tokenizer) -> None:
    processor = OutputProcessor(tokenizer)
    requests = processor.add_request(
        "r", "prompt", [1, 5], SamplingParams(n=3, seed=10, logprobs=1)
    )
    assert [r.request_id for r in requests] == ["r-0", "r-1", "r-2"]
    assert [r.sampling_params.seed for r in requests] == [10, 11, 12]
    assert [r.prefix_leader for r in requests] == [None, "r-0", "r-0"]
    hello = tokenizer.encode("hello", add_special_tokens=False)[0]
    lp = TokenLogprobs(hello, -0.5, 1, (hello,), (-0.5,))
    first = processor.process_outputs(
        [
            EngineCoreOutput("r-1", [hello], [lp], finish_reason="length"),
            EngineCoreOutput("r-0", [hello], [lp]),
            EngineCoreOutput("unknown", [3]),
        ]
    )
    assert [(d.request_id, d.index, d.text) for d in first.deltas] == [
        ("r", 1, "hello"),
        ("r", 0, "hello"),
    ]
    assert first.finished == []
    done = processor.process_outputs(
        [
            EngineCoreOutput("r-0", [2], [lp], finish_reason="stop"),
            EngineCoreOutput("r-2", [hello], [lp], finish_reason="length", num_cached_tokens=0),
        ]
    )
    (output,) = done.finished
    assert output.finished and output.prompt == "prompt" and output.prompt_token_ids == [1, 5]
    assert [o.index for o in output.outputs] == [0, 1, 2]
    assert [o.finish_reason for o in output.outputs] == ["stop", "length", "length"]
    assert output.outputs[0].logprobs is not None
    assert output.outputs[0].logprobs[0][hello].decoded_token == "hello"
    assert output.outputs[0].cumulative_logprob == pytest.approx(-1.0)
    assert not processor.has_unfinished_requests()


def test_abort_and_duplicate_ids(tokenizer: Tokenizer) -> None:
    processor = OutputProcessor(tokenizer)
    processor.add_request("a", None, [1], SamplingParams(n=2))
    with pytest.raises(ValueError, match="already in use"):
        processor.add_request("a", None, [1], SamplingParams())
    assert processor.abort_request("a") == ["a-0", "a-1"]
    assert processor.abort_request("a") == []
    assert not processor.has_unfinished_requests()
    with pytest.raises(ValueError, match="tokenizer"):
        OutputProcessor(None).add_request("b", None, [1], SamplingParams(stop="x"))
