"""vLLM's `serve` flags as a user switching from vLLM meets them: --enforce-eager, --chat-template.

The parser tests need no server; the chat-template ones run real servers on a copy of the bigram
checkpoint that ships no chat template (bigram_model.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_harness import ServerProcess, start_server

from llmservice.runtime.cli import build_parser
from llmservice.runtime.engine_args import EngineArgs
from llmservice.runtime.server.command import _engine_kwargs

MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]
# Ends on <|go|>, which the bigram model continues with "Hello,World!" (its own template ends on
# <|assistant|>, continued with a <think> block): the answer shows which template was used.
CUSTOM_TEMPLATE = "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}"
CUSTOM_TEMPLATE += "{% if add_generation_prompt %}{{ '<|go|>' }}{% endif %}"


def _serve_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "some-model", *flags])


def test_enforce_eager_reaches_the_engine_args() -> None:
    eager = EngineArgs(**_engine_kwargs(_serve_args("--enforce-eager")))
    default = EngineArgs(**_engine_kwargs(_serve_args()))
    assert eager.enforce_eager is True
    assert default.enforce_eager is False


def test_chat_template_is_a_file_or_the_template_text(tmp_path: Path) -> None:
    path = tmp_path / "chat.jinja"
    path.write_text(CUSTOM_TEMPLATE)
    assert _serve_args("--chat-template", str(path)).chat_template == CUSTOM_TEMPLATE
    assert _serve_args("--chat-template", CUSTOM_TEMPLATE).chat_template == CUSTOM_TEMPLATE
    assert _serve_args().chat_template is None


def test_chat_template_accepts_what_transformers_renders() -> None:
    # Loop controls and transformers' {% generation %} block are not plain Jinja.
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    )
    assert _serve_args("--chat-template", template).chat_template == template


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{% for m in messages %}{{ m['content'] }}", "syntax error (line 1)"),
        ("a" * 300, "is not a file and does not look like a Jinja template"),
    ],
)
def test_a_bad_chat_template_is_refused_by_the_parser(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _serve_args("--chat-template", value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --chat-template" in err
    assert message in err


def test_a_mistyped_chat_template_path_fails_start_up(tiny_model: Path) -> None:
    exe = Path(sys.prefix) / "bin" / "llmservice"
    command = [str(exe), "serve", str(tiny_model), "--device", "cpu"]
    command += ["--chat-template", "templates/chatml.jinja"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --chat-template: 'templates/chatml.jinja' is not a file" in result.stderr


@pytest.fixture(scope="module")
def untemplated_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bigram checkpoint without the chat template in its tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("no-chat-template")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(tiny_model / name, folder / name)
    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def templated_server(
    untemplated_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("templated-server")
    template = folder / "chat.jinja"
    template.write_text(CUSTOM_TEMPLATE)
    server = start_server(
        untemplated_model,
        folder,
        "--chat-template", str(template),
        "--served-model-name", "tiny", "org/tiny",
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()[-4000:]


@pytest.mark.slow
def test_a_model_without_chat_template_serves_chat_with_chat_template(
    templated_server: ServerProcess,
) -> None:
    status, _, tokenized = templated_server.post(
        "/tokenize", {"messages": MESSAGES, "return_token_strs": True}
    )
    assert status == 200
    assert tokenized["token_strs"][0] == "<|user|>"
    assert tokenized["token_strs"][-1] == "<|go|>"
    rendered = "<|user|>What is 1 + 1?<|go|>"
    plain = templated_server.post("/tokenize", {"prompt": rendered, "add_special_tokens": False})
    assert tokenized["tokens"] == plain[2]["tokens"]

    status, _, answer = templated_server.post(
        "/v1/chat/completions", {"messages": MESSAGES, "temperature": 0}
    )
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "Hello,World!"
    assert answer["usage"]["prompt_tokens"] == tokenized["count"]


@pytest.mark.slow
def test_a_model_without_chat_template_refuses_chat_without_the_flag(
    untemplated_model: Path, tmp_path: Path
) -> None:
    server = start_server(untemplated_model, tmp_path)
    try:
        status, _, error = server.post("/v1/chat/completions", {"messages": MESSAGES})
    finally:
        assert server.stop() == 0, server.log()[-4000:]
    assert status == 400
    assert error["error"]["param"] == "messages"
    assert "no chat template: start the server with --chat-template" in error["error"]["message"]


def test_retrieve_a_model_name_with_a_slash(templated_server: ServerProcess) -> None:
    # The openai client sends "org/tiny" as org%2Ftiny; curl users send the slash raw.
    client = openai.OpenAI(base_url=templated_server.url + "/v1", api_key="none", max_retries=0)
    assert client.models.retrieve("org/tiny").id == "org/tiny"
    status, _, body = templated_server.get("/v1/models/org/tiny")
    assert status == 200
    assert json.loads(body)["id"] == "org/tiny"
