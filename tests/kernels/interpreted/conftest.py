"""The Triton kernels run by Triton's CPU interpreter (TRITON_INTERPRET=1), on tiny shapes.

`@triton.jit` (Triton's own library functions included) decides between compiling and
interpreting when it runs, from TRITON_INTERPRET, so the variable must be set before Triton is
first imported: these tests only run in their own process. `tests/kernels/test_interpreter.py`
starts it; by hand: `TRITON_INTERPRET=1 .venv/bin/pytest tests/kernels/interpreted`. In any
other process this folder is skipped, so the variable never leaks into other tests.
"""

from __future__ import annotations

import os

if os.environ.get("TRITON_INTERPRET") == "1":
    from triton.runtime import interpreter as _interpreter

    _original_patch_lang_tensor = _interpreter._patch_lang_tensor

    def _patch_lang_tensor(tensor: object, scope: object) -> None:
        # NOTE: triton 3.6's interpreter turns its scalars (1-element arrays) into ints with
        # int(), which numpy >= 2.4 refuses, so `range(start, end)` over loaded values fails
        # (triton-lang/triton#9171, fixed upstream after 3.6). Patch what the upstream fix does.
        _original_patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))  # type: ignore[attr-defined]

    _interpreter._patch_lang_tensor = _patch_lang_tensor
else:
    collect_ignore_glob = ["test_*.py"]
