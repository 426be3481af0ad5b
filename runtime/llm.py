"""`LLM`: offline generation in-process, shaped like vLLM's `LLM` (DESIGN.md section 2).

An `EngineCore` (tokens) and an `OutputProcessor` (text) in one process: `generate` adds the
prompts, steps the core until every request finished, and returns the outputs in prompt order.
With the overlapped loop (CUDA) and no priorities, the first step is launched once the prompts
added fill it, and the host checks and adds the rest while the device computes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from llmservice.runtime.engine_args import EngineArgs
from llmservice.runtime.engine_core import EngineCore, EngineCoreOutput
from llmservice.runtime.output_processor import OutputProcessor
from llmservice.runtime.outputs import RequestOutput
from llmservice.runtime.sampling_params import SamplingParams
from llmservice.runtime.tokenizer import Tokenizer

# A prompt: text, {"prompt": text}, or {"prompt_token_ids": [...]} (optionally with "prompt").
PromptType = str | dict[str, Any]
Conversation = Sequence[dict[str, Any]]


class LLM:
    """Loads a model and generates from batches of prompts (continuous batching inside)."""

    def __init__(
        self,
        model: str,
        load_format: str = "auto",
        dtype: str = "auto",
        device: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool = True,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        *,
        scheduling_policy: str = "fcfs",
        num_kv_blocks: int | None = None,
        enforce_eager: bool = False,
        kernel_ops: str | None = None,
        admission_headroom: bool = True,
    ) -> None:
        """Arguments as vLLM's `LLM`; None = chosen for the device. `num_kv_blocks` fixes the
        KV pool size (tests force preemption with tiny pools); `enforce_eager` turns CUDA graphs
        off; `kernel_ops` names the kernel set ("reference" is the oracle on any device);
        `admission_headroom=False` admits requests whenever their prompt fits (as vLLM)."""
        self.engine_args = EngineArgs(
            model=model,
            load_format=load_format,
            dtype=dtype,
            device=device,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            scheduling_policy=scheduling_policy,
            num_kv_blocks=num_kv_blocks,
            enforce_eager=enforce_eager,
            kernel_ops=kernel_ops,
            admission_headroom=admission_headroom,
        )
        config = self.engine_args.create_engine_config()
        self.engine_core = EngineCore(config)
        self.tokenizer = Tokenizer.from_folder(config.model.path)
        self.output_processor = OutputProcessor(self.tokenizer)
        self._request_counter = itertools.count()

    def get_tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer (None when the folder has none)."""
        return self.tokenizer

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        priority: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt; outputs in prompt order. ValueError on bad input (then
        nothing of this call stays queued)."""
        prompt_list = [prompts] if isinstance(prompts, str | dict) else list(prompts)
        params_list = _broadcast(sampling_params, len(prompt_list))
        if priority is not None and len(priority) != len(prompt_list):
            raise ValueError(f"priority has {len(priority)} entries for {len(prompt_list)} prompts")
        request_ids: list[str] = []
        outputs: dict[str, RequestOutput] = {}
        # NOTE: checking and adding W3's 200 x 4K prompt ids takes the host ~0.07 s; launched
        # early, the first step (~0.35 s on the device) hides it. A step launched this way
        # returns nothing yet (nothing was in flight), and an error later still aborts all.
        # With priorities the first step must see every prompt (a later one may come first).
        first_step_tokens = None
        if self.engine_core.async_scheduling and priority is None:
            first_step_tokens = self.engine_core.config.scheduler.max_num_batched_tokens
        queued_tokens = 0
        try:
            for i, (prompt, params) in enumerate(zip(prompt_list, params_list, strict=True)):
                text, token_ids = self._parse_prompt(prompt)
                request_ids.append(
                    self._add_request(text, token_ids, params, priority[i] if priority else 0)
                )
                queued_tokens += len(token_ids) * params.n
                if (
                    first_step_tokens is not None
                    and queued_tokens >= first_step_tokens
                    and i + 1 < len(prompt_list)
                ):
                    self._collect(self.engine_core.step(), outputs)
                    first_step_tokens = None
        except Exception:
            self._abort([r for r in request_ids if r not in outputs])
            self._settle()  # the step launched early
            raise
        return self._run(request_ids, outputs)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Generate replies to one conversation or a list of them (the model's chat template)."""
        tokenizer = self._require_tokenizer()
        is_one = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if is_one else list(messages)
        prompts: list[PromptType] = []
        for conversation in conversations:
            text = tokenizer.apply_chat_template(
                conversation,  # type: ignore[arg-type]
                add_generation_prompt=add_generation_prompt,
                chat_template=chat_template,
                **(chat_template_kwargs or {}),
            )
            # The template writes BOS and the other special tokens itself.
            ids = tokenizer.encode(text, add_special_tokens=False)
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params)

    def _add_request(
        self, text: str | None, token_ids: list[int], params: SamplingParams, priority: int
    ) -> str:
        request_id = str(next(self._request_counter))
        core_requests = self.output_processor.add_request(
            request_id, text, token_ids, params, priority
        )
        try:
            for core_request in core_requests:
                self.engine_core.add_request(core_request)
        except Exception:
            self._abort([request_id])
            raise
        return request_id

    def _run(
        self, request_ids: list[str], outputs: dict[str, RequestOutput]
    ) -> list[RequestOutput]:
        """Step until every request of `request_ids` is in `outputs` (finished ones may be)."""
        try:
            while len(outputs) < len(request_ids):
                if not self.engine_core.has_unfinished_requests():
                    raise RuntimeError("the engine went idle with requests still unfinished")
                self._collect(self.engine_core.step(), outputs)
        except BaseException:
            # NOTE: an interrupted call (Ctrl-C included) must not leave its requests running:
            # the next call would step them too, and their outputs would count as its own.
            self._abort([r for r in request_ids if r not in outputs])
            raise
        self._settle()  # the step launched ahead for requests that have all finished now
        return [outputs[request_id] for request_id in request_ids]

    def _settle(self) -> None:
        """With nothing left to schedule, apply the step still in flight (the overlapped loop
        launches one ahead; its tokens are dropped), so the engine is idle for the next call."""
        if not self.engine_core.scheduler.has_unfinished_requests():
            self.engine_core.step()

    def _collect(
        self, core_outputs: list[EngineCoreOutput], outputs: dict[str, RequestOutput]
    ) -> None:
        """Apply one step's outputs; the requests that finished go into `outputs`."""
        processed = self.output_processor.process_outputs(core_outputs)
        self.engine_core.abort_requests(processed.abort_ids)
        for output in processed.finished:
            outputs[output.request_id] = output

    def _abort(self, request_ids: list[str]) -> None:
        """Drop requests from the output processor and the engine (their KV blocks freed)."""
        for request_id in request_ids:
            self.engine_core.abort_requests(self.output_processor.abort_request(request_id))

    def _parse_prompt(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self._require_tokenizer().encode(prompt)
        if not isinstance(prompt, dict):
            raise ValueError(f"a prompt must be a str or a dict, got {type(prompt).__name__}")
        text = prompt.get("prompt")
        token_ids = prompt.get("prompt_token_ids")
        if token_ids is not None:
            return text, list(token_ids)
        if isinstance(text, str):
            return text, self._require_tokenizer().encode(text)
        raise ValueError("a prompt dict needs 'prompt_token_ids' or a 'prompt' string")

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(
                "this model folder has no tokenizer: give prompts as {'prompt_token_ids': [...]}"
            )
        return self.tokenizer


def _broadcast(
    params: SamplingParams | Sequence[SamplingParams] | None, count: int
) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    if len(params) != count:
        raise ValueError(f"got {len(params)} sampling_params for {count} prompts")
    return list(params)
