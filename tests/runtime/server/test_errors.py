"""Every client error, over raw HTTP: the status, and OpenAI's envelope with the right param."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from server_harness import API_KEY, ServerProcess

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def _assert_envelope(body: Any, status: int, expected: int, param: str | None = None) -> str:
    assert status == expected, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    return str(error["message"])


def _raw(server: ServerProcess, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; (status, JSON body) of the answer, read as soon as it is complete."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"messages": MESSAGES, "max_tokens": "5"}, "max_tokens"),
        (CHAT, {"messages": "hi"}, "messages"),
        (CHAT, {"max_tokens": 5}, "messages"),
        (CHAT, {"messages": MESSAGES, "stream": "yes"}, "stream"),
        (CHAT, {"messages": MESSAGES, "temperature": -1}, "temperature"),
        (CHAT, {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        (CHAT, {"messages": MESSAGES, "max_completion_tokens": -3}, "max_completion_tokens"),
        (CHAT, {"messages": MESSAGES, "max_tokens": 256}, "max_tokens"),
        (CHAT, {"messages": MESSAGES, "n": 0}, "n"),
        (CHAT, {"messages": MESSAGES, "n": 129}, "n"),
        (CHAT, {"messages": MESSAGES, "n": 64, "max_tokens": 200}, "max_tokens"),
        (CHAT, {"messages": MESSAGES, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (CHAT, {"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
        (CHAT, {"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
        (CHAT, {"messages": MESSAGES, "priority": 5}, "priority"),
        (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": -1}, "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "logprobs": 21}, "logprobs"),
        (COMPLETIONS, {"prompt": ["x", 5]}, "prompt"),
        (COMPLETIONS, {"prompt": [1, 2, 10**9]}, "prompt"),
        (COMPLETIONS, {"prompt": []}, "prompt"),
        (COMPLETIONS, {"prompt": "x" * 300}, "prompt"),
        (COMPLETIONS, {"prompt": "the quick " * 2000}, "prompt"),  # tokenized in a thread
        (COMPLETIONS, {"prompt": [1] * 250, "max_tokens": 10}, "max_tokens"),
        # These two used to crash the engine core inside a step (every request failed after).
        (COMPLETIONS, {"prompt": "x", "top_k": 2**63}, "top_k"),
        (
            COMPLETIONS,
            {"prompt": "x", "stop_token_ids": [10**6], "min_tokens": 2},
            "stop_token_ids",
        ),
        (CHAT, {"messages": MESSAGES, "seed": -(2**63) - 1}, "seed"),
        (COMPLETIONS, {"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
        (COMPLETIONS, {"prompt": "x", "logit_bias": {"10000000": 1}}, "logit_bias"),
        (COMPLETIONS, {"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
        (CHAT, {"messages": MESSAGES, "logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ],
)
def test_invalid_requests_get_400_naming_the_field(
    api_server: ServerProcess, path: str, body: dict[str, Any], param: str
) -> None:
    status, _, answer = api_server.post(path, {"model": "tiny", **body})
    _assert_envelope(answer, status, 400, param)
    status, _, answer = api_server.post(COMPLETIONS, {"prompt": "x", "max_tokens": 2})
    assert status == 200 and answer["usage"]["completion_tokens"] == 2  # still serving


def test_malformed_json_and_non_objects_get_400(api_server: ServerProcess) -> None:
    for raw in (b"{not json", b"[1, 2]", b""):
        status, _, answer = api_server.post(CHAT, raw)
        _assert_envelope(answer, status, 400)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
    ],
)
def test_unimplemented_features_get_400_saying_so(
    api_server: ServerProcess, body: dict[str, Any], param: str
) -> None:
    status, _, answer = api_server.post(CHAT, {"model": "tiny", "messages": MESSAGES, **body})
    assert "not supported" in _assert_envelope(answer, status, 400, param)


def test_unknown_fields_are_ignored_with_a_warning(api_server: ServerProcess) -> None:
    status, _, answer = api_server.post(
        COMPLETIONS, {"prompt": "<|go|>", "frobnicate": 1, "max_tokens": 3}
    )
    assert status == 200 and answer["choices"][0]["text"] == "Hello,World"
    assert "ignoring unknown fields frobnicate" in api_server.log()


def test_unknown_model_gets_404(api_server: ServerProcess) -> None:
    status, _, answer = api_server.post(CHAT, {"model": "gpt-9", "messages": MESSAGES})
    _assert_envelope(answer, status, 404, "model")


def test_unknown_route_gets_404_envelope(api_server: ServerProcess) -> None:
    status, _, answer = api_server.post("/v1/embeddings", {"input": "x"})
    _assert_envelope(answer, status, 404)


def test_a_bad_or_missing_key_gets_401_except_on_probes(api_server: ServerProcess) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
        status, _, answer = api_server.post(CHAT, {"messages": MESSAGES}, headers)
        _assert_envelope(answer, status, 401)
    status, _, body = api_server.get("/v1/models")
    _assert_envelope(json.loads(body), status, 401)
    assert api_server.get("/v1/models", {"Authorization": f"Bearer {API_KEY}"})[0] == 200
    for path in ("/health", "/ready", "/metrics", "/version"):
        assert api_server.get(path)[0] == 200, path


def test_a_body_too_large_gets_413(api_server: ServerProcess) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    status, answer = _raw(api_server, head.encode() + b"{" + b" " * 1024)
    _assert_envelope(answer, status, 413)


def test_headers_too_large_get_413(api_server: ServerProcess) -> None:
    head = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 40000}\r\n\r\n"
    status, answer = _raw(api_server, head.encode())
    _assert_envelope(answer, status, 413)


def test_tokenize_and_detokenize_round_trip(api_server: ServerProcess) -> None:
    status, _, tokens = api_server.post("/tokenize", {"prompt": "say <|go|>"})
    assert (
        status == 200
        and tokens["count"] == len(tokens["tokens"])
        and tokens["max_model_len"] == 256
    )
    status, _, text = api_server.post("/detokenize", {"tokens": tokens["tokens"]})
    assert status == 200 and text["prompt"] == "say "  # the special token is skipped
    status, _, chat = api_server.post(
        "/tokenize", {"messages": MESSAGES, "return_token_strs": True}
    )
    assert status == 200 and chat["token_strs"][-1] == "<|assistant|>"
    status, _, answer = api_server.post("/detokenize", {"tokens": [10**9]})
    _assert_envelope(answer, status, 400, "tokens")
    status, _, answer = api_server.post("/tokenize", {})
    _assert_envelope(answer, status, 400)


def test_version_health_and_ready(api_server: ServerProcess) -> None:
    import llmservice

    status, _, body = api_server.get("/version")
    assert status == 200 and json.loads(body) == {"version": llmservice.__version__}
    assert api_server.get("/health")[0] == 200
    assert api_server.get("/ready")[0] == 200
    log = api_server.log()  # the access log leaves the probes out
    assert '"GET /version" 200' in log
    assert '"GET /health"' not in log and '"GET /ready"' not in log and '"GET /metrics"' not in log
