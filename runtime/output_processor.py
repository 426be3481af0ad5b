"""`OutputProcessor`: the text-level half of the engine (front-end side of the process split).

It fans a request with n samples out into n core requests (ids "<id>-<i>" when n > 1), turns
each step's `EngineCoreOutput`s into text with incremental detokenization, applies stop strings
(the text is cut before the stop string; the core must then abort the sample, so the processor
returns its id), and fans the samples back in. Per step it returns deltas (new text, tokens and
logprobs of each sample, for streaming) and the `RequestOutput` of every request that finished.

It knows nothing of who calls it: `LLM` uses it in-process; the HTTP server uses it in the API
process in front of an EngineCore process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmservice.runtime.detokenizer import IncrementalDetokenizer
from llmservice.runtime.engine_core import EngineCoreOutput, EngineCoreRequest
from llmservice.runtime.outputs import CompletionOutput, Logprob, RequestOutput, TokenLogprobs
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.runtime.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class CompletionDelta:
    """What one sample of a request gained in one step."""

    request_id: str
    """The front-end request id (not the core id)."""
    index: int
    """Which of the n samples."""
    text: str
    """New text (text that may still turn out to start a stop string is held back)."""
    token_ids: list[int]
    """New token ids."""
    logprobs: list[dict[int, Logprob]] | None
    """Per new token, when logprobs were requested."""
    finish_reason: str | None
    """"stop", "length" or "abort" when this sample finished in this step."""
    stop_reason: int | str | None
    """The stop string or stop token id that finished it."""
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    """With the first token of the sample that computed them: the prompt logprobs."""

    @property
    def finished(self) -> bool:
        """Whether this sample finished in this step."""
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class ProcessedOutputs:
    """The result of one `process_outputs` call."""

    deltas: list[CompletionDelta]
    """Per sample that changed, its delta."""
    finished: list[RequestOutput]
    """Requests whose every sample is now finished."""
    abort_ids: list[str]
    """Core request ids to abort in the EngineCore (stop strings found in their text)."""


@dataclass(slots=True)
class _Sample:
    """The text-level state of one core request."""

    request_id: str  # the front-end request's id
    output: CompletionOutput
    params: SamplingParams
    detokenizer: IncrementalDetokenizer | None
    sent_chars: int = 0  # characters of output.text already returned in deltas


@dataclass(slots=True)
class _Parent:
    """A front-end request and its n samples."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    samples: list[_Sample]
    num_cached_tokens: int = 0
    arrival_time: float = field(default_factory=time.monotonic)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None

    def to_output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=[sample.output for sample in self.samples],
            finished=all(sample.output.finished() for sample in self.samples),
            num_cached_tokens=self.num_cached_tokens,
            prompt_logprobs=self.prompt_logprobs,
        )


class OutputProcessor:
    """Detokenizes, applies stop strings and fans samples in, one core step at a time."""

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer
        self._parents: dict[str, _Parent] = {}
        self._samples: dict[str, tuple[_Parent, _Sample]] = {}  # by core request id

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int = 0,
        arrival_time: float | None = None,
    ) -> list[EngineCoreRequest]:
        """Track a request; return the core requests to send (n of them, seeds seed + i)."""
        if request_id in self._parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer, and this model has none")
        arrival = time.monotonic() if arrival_time is None else arrival_time
        parent = _Parent(request_id, prompt, list(prompt_token_ids), [], arrival_time=arrival)
        core_requests: list[EngineCoreRequest] = []
        for index in range(params.n):
            core_id = request_id if params.n == 1 else f"{request_id}-{index}"
            if core_id in self._samples:
                raise ValueError(f"request id {core_id!r} is already in use")
            sample_params = params
            if params.n > 1 and params.seed is not None:
                sample_params = params.with_seed(params.sample_seed(index))
            if index > 0 and params.prompt_logprobs is not None:
                # The first sample computes them; the others share its cached prompt.
                sample_params = dataclasses.replace(sample_params, prompt_logprobs=None)
            parent.samples.append(
                self._new_sample(request_id, index, prompt_token_ids, sample_params)
            )
            core_requests.append(
                EngineCoreRequest(
                    core_id,
                    list(prompt_token_ids),
                    sample_params,
                    priority,
                    arrival,
                    # Samples after the first start from its cached prompt blocks.
                    prefix_leader=core_requests[0].request_id if core_requests else None,
                )
            )
        self._parents[request_id] = parent
        for core_request, sample in zip(core_requests, parent.samples, strict=True):
            self._samples[core_request.request_id] = (parent, sample)
        return core_requests

    def abort_request(self, request_id: str) -> list[str]:
        """Forget a request (e.g. its client left); return the core ids to abort."""
        parent = self._parents.pop(request_id, None)
        if parent is None:
            return []
        core_ids = [cid for cid, (p, _) in self._samples.items() if p is parent]
        for core_id in core_ids:
            del self._samples[core_id]
        return core_ids

    def has_unfinished_requests(self) -> bool:
        """Whether any request still has a sample generating."""
        return bool(self._parents)

    def process_outputs(self, outputs: Iterable[EngineCoreOutput]) -> ProcessedOutputs:
        """Apply one step's core outputs; outputs for unknown or finished samples are ignored."""
        deltas: list[CompletionDelta] = []
        finished: list[RequestOutput] = []
        abort_ids: list[str] = []
        for core_output in outputs:
            entry = self._samples.get(core_output.request_id)
            if entry is None:
                continue
            parent, sample = entry
            if core_output.num_cached_tokens and sample.output.index == 0:
                parent.num_cached_tokens = core_output.num_cached_tokens
            if core_output.prompt_logprobs is not None:
                parent.prompt_logprobs = [
                    None,
                    *(self._logprob_dict(lp) for lp in core_output.prompt_logprobs),
                ]
            delta = self._apply(sample, core_output)
            if core_output.prompt_logprobs is not None:
                delta = dataclasses.replace(delta, prompt_logprobs=parent.prompt_logprobs)
            deltas.append(delta)
            if not delta.finished:
                continue
            del self._samples[core_output.request_id]
            if not core_output.finished:
                abort_ids.append(core_output.request_id)  # stopped by a stop string
            if all(s.output.finished() for s in parent.samples):
                del self._parents[parent.request_id]
                finished.append(parent.to_output())
        return ProcessedOutputs(deltas=deltas, finished=finished, abort_ids=abort_ids)

    def _new_sample(
        self, request_id: str, index: int, prompt_token_ids: Sequence[int], params: SamplingParams
    ) -> _Sample:
        detokenizer = None
        if self.tokenizer is not None:
            detokenizer = IncrementalDetokenizer(
                self.tokenizer, prompt_token_ids, params.skip_special_tokens
            )
        wants_logprobs = params.logprobs is not None
        output = CompletionOutput(
            index=index,
            text="",
            token_ids=[],
            cumulative_logprob=0.0 if wants_logprobs else None,
            logprobs=[] if wants_logprobs else None,
        )
        return _Sample(request_id, output, params, detokenizer)

    def _apply(self, sample: _Sample, core_output: EngineCoreOutput) -> CompletionDelta:
        """Add a core output to a sample; returns the sample's delta."""
        out, params = sample.output, sample.params
        out.token_ids.extend(core_output.new_token_ids)
        new_logprobs = None
        if out.logprobs is not None and core_output.new_logprobs is not None:
            new_logprobs = [self._logprob_dict(lp) for lp in core_output.new_logprobs]
            out.logprobs.extend(new_logprobs)
            out.cumulative_logprob = (out.cumulative_logprob or 0.0) + sum(
                lp.logprob for lp in core_output.new_logprobs
            )
        finish_reason, stop_reason = core_output.finish_reason, core_output.stop_reason
        if sample.detokenizer is not None:
            new_text = sample.detokenizer.add_tokens(core_output.new_token_ids)
            if core_output.finished:
                new_text += sample.detokenizer.flush()
            out.text += new_text
            if len(out.token_ids) >= params.min_tokens:
                stop = _find_stop_string(out.text, len(new_text), params)
                if stop is not None:
                    stop_string, end = stop
                    out.text = out.text[:end]
                    finish_reason, stop_reason = "stop", stop_string
        out.finish_reason, out.stop_reason = finish_reason, stop_reason
        # Hold back a tail that could be the start of a stop string, until it is decided.
        hold = 0
        if finish_reason is None and params.stop_strings and not params.include_stop_str_in_output:
            hold = max(len(s) for s in params.stop_strings) - 1
        upto = max(sample.sent_chars, len(out.text) - hold)
        text_delta = out.text[sample.sent_chars : upto]
        sample.sent_chars = upto
        return CompletionDelta(
            request_id=sample.request_id,
            index=out.index,
            text=text_delta,
            token_ids=list(core_output.new_token_ids),
            logprobs=new_logprobs,
            finish_reason=finish_reason,
            stop_reason=stop_reason,
        )

    def _logprob_dict(self, lp: TokenLogprobs) -> dict[int, Logprob]:
        """vLLM's per-position dict: the sampled token, then the top tokens."""
        entries = {lp.token_id: Logprob(lp.logprob, lp.rank, self._token_text(lp.token_id))}
        for rank, (token_id, logprob) in enumerate(
            zip(lp.top_token_ids, lp.top_logprobs, strict=True), start=1
        ):
            entries.setdefault(token_id, Logprob(logprob, rank, self._token_text(token_id)))
        return entries

    def _token_text(self, token_id: int) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode([token_id], skip_special_tokens=False)


def _find_stop_string(
    text: str, num_new_chars: int, params: SamplingParams
) -> tuple[str, int] | None:
    """The earliest stop string that ends in the new text, and where the text must end."""
    if not params.stop_strings or num_new_chars == 0:
        return None
    longest = max(len(s) for s in params.stop_strings)
    # Only a match that overlaps the new characters is new (earlier text was checked before).
    search_from = max(len(text) - num_new_chars - longest + 1, 0)
    best: tuple[int, str] | None = None
    for stop in params.stop_strings:
        index = text.find(stop, search_from)
        if index != -1 and (best is None or index < best[0]):
            best = (index, stop)
    if best is None:
        return None
    index, stop = best
    return stop, index + len(stop) if params.include_stop_str_in_output else index
