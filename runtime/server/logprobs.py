"""Logprobs in OpenAI's two shapes, built from the engine's token ids and logprobs.

Chat: `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`.
Completions: `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`.
The top list holds the request's k most likely tokens by rank (the sampled one among them
only if it is one of the k).
"""

from __future__ import annotations

from typing import Any

from llmservice.runtime.outputs import Logprob

# JSON has no -inf; OpenAI-compatible servers send this floor instead.
_MIN_LOGPROB = -9999.0


def chat_logprobs(
    token_ids: list[int], logprobs: list[dict[int, Logprob]], top: int
) -> list[dict[str, Any]]:
    """The `content` entries of the new tokens."""
    content = []
    for token_id, entries in zip(token_ids, logprobs, strict=True):
        entry = _token_entry(token_id, entries[token_id])
        entry["top_logprobs"] = [_token_entry(tid, lp) for tid, lp in _top(entries, top)]
        content.append(entry)
    return content


class CompletionLogprobs:
    """The `logprobs` object of one completions choice, grown token by token."""

    def __init__(self, top: int, text_offset: int = 0) -> None:
        self._top = top
        self._offset = text_offset

    def add_prompt(
        self,
        token_ids: list[int],
        logprobs: list[dict[int, Logprob] | None],
        first_token_text: str,
    ) -> dict[str, Any]:
        """The echoed prompt's logprobs object (OpenAI's: None for the first token)."""
        result: dict[str, Any] = {
            "tokens": [first_token_text],
            "token_logprobs": [None],
            "top_logprobs": [None],
            "text_offset": [self._offset],
        }
        self._offset += len(first_token_text)
        for token_id, entries in zip(token_ids[1:], logprobs[1:], strict=True):
            if entries is None:  # only the first position has none
                raise ValueError(f"prompt token {token_id} has no logprobs")
            part = self.add([token_id], [entries])
            for key, values in part.items():
                result[key].extend(values)
        return result

    def add(self, token_ids: list[int], logprobs: list[dict[int, Logprob]]) -> dict[str, Any]:
        """The logprobs object of these new tokens (offsets continue from earlier calls)."""
        result: dict[str, Any] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for token_id, entries in zip(token_ids, logprobs, strict=True):
            text = token_text(token_id, entries[token_id])
            result["tokens"].append(text)
            result["token_logprobs"].append(_clamp(entries[token_id].logprob))
            result["top_logprobs"].append(
                {token_text(tid, lp): _clamp(lp.logprob) for tid, lp in _top(entries, self._top)}
            )
            result["text_offset"].append(self._offset)
            self._offset += len(text)
        return result


def merge_completion_logprobs(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One logprobs object from the per-step ones (non-streaming)."""
    if not parts:
        return None
    return {key: [value for part in parts for value in part[key]] for key in parts[0]}


def token_text(token_id: int, logprob: Logprob) -> str:
    """The token's text; `token_id:<id>` when the model has no tokenizer (vLLM's form)."""
    return logprob.decoded_token if logprob.decoded_token is not None else f"token_id:{token_id}"


def _token_entry(token_id: int, logprob: Logprob) -> dict[str, Any]:
    text = token_text(token_id, logprob)
    return {"token": text, "logprob": _clamp(logprob.logprob), "bytes": list(text.encode())}


def _top(entries: dict[int, Logprob], k: int) -> list[tuple[int, Logprob]]:
    return sorted(entries.items(), key=lambda item: item[1].rank)[:k]


def _clamp(logprob: float) -> float:
    return max(logprob, _MIN_LOGPROB)
