"""The built-in models: small checkpoints trained in this repository and shipped in the package.

`builtin:tiny-reasoner` is a Llama-architecture model of about five million parameters that
solves arithmetic step by step in the DeepSeek-R1 style (`<think>working</think>answer`). It
lets everything run offline on a laptop, and its exact answers let tests check the whole engine.
`train.py` makes it, `evaluate.py` measures it.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_PREFIX = "builtin:"
# name -> the checkpoint folder beside this file
BUILTIN_MODELS: dict[str, str] = {"tiny-reasoner": "tiny-reasoner"}


def is_builtin(model: str) -> bool:
    """Whether `model` names a built-in model (`builtin:<name>`)."""
    return model.startswith(BUILTIN_PREFIX)


def resolve_builtin(model: str) -> Path:
    """The checkpoint folder of the built-in model `model` (e.g. `builtin:tiny-reasoner`).

    Raises ValueError for a name that is not `builtin:<name>` or names no built-in model, and
    FileNotFoundError if the package was installed without the checkpoint files.
    """
    if not is_builtin(model):
        raise ValueError(
            f"{model!r} is not a built-in model name (they start with {BUILTIN_PREFIX!r})"
        )
    name = model.removeprefix(BUILTIN_PREFIX)
    folder = BUILTIN_MODELS.get(name)
    if folder is None:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(BUILTIN_MODELS))
        raise ValueError(f"unknown built-in model {model!r}; the built-in models are: {known}")
    path = Path(__file__).resolve().parent / folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the checkpoint of {model} is missing from {path}: the package was installed "
            "without its data files (runtime/builtin/tiny-reasoner/*)"
        )
    return path


def resolve_model_path(model: str) -> Path:
    """The folder of `model`: a built-in model's checkpoint, or `model` itself as a path."""
    return resolve_builtin(model) if is_builtin(model) else Path(model)
