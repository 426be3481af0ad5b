"""The tokenizer of a model folder: text <-> token ids and the chat template.

A thin wrapper over transformers' tokenizer, so the rest of the runtime depends on five methods
rather than on transformers' whole surface. A folder without tokenizer files (e.g. a config
used with load_format="dummy") has no tokenizer: prompts must then be token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Any of these in a folder means it ships a tokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class Tokenizer:
    """Encode, decode and render chat conversations for one model."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tokenizer = hf_tokenizer

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer | None:
        """The folder's tokenizer, or None when it has no tokenizer files."""
        path = Path(folder)
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            return None
        from transformers import AutoTokenizer  # imported here: it is slow to import

        return cls(AutoTokenizer.from_pretrained(str(path)))

    @property
    def eos_token_id(self) -> int | None:
        """The tokenizer's end-of-sequence id, if it defines one."""
        token_id = self._tokenizer.eos_token_id
        return None if token_id is None else int(token_id)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return len(self._tokenizer)

    @property
    def has_chat_template(self) -> bool:
        """Whether the model ships a chat template."""
        return bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` (with BOS etc. when add_special_tokens)."""
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `token_ids`; an incomplete UTF-8 sequence at the end decodes to U+FFFD."""
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **template_kwargs: Any,
    ) -> str:
        """The conversation rendered as prompt text; ValueError when there is no chat template."""
        template = chat_template or getattr(self._tokenizer, "chat_template", None)
        if not template:
            raise ValueError("this model has no chat template; pass chat_template=...")
        return str(
            self._tokenizer.apply_chat_template(
                list(messages),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                chat_template=template,
                **template_kwargs,
            )
        )
