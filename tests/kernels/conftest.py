"""Fixtures shared by the kernel tests (the GPU ones here and the interpreted ones below)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


@pytest.fixture
def cuda() -> torch.device:
    """The CUDA device; skips the test where there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


def _assert_relative_error(out: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """‖out − expected‖ / ‖expected‖ <= tolerance, every element finite (poison shows up)."""
    if out.shape != expected.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != expected {tuple(expected.shape)}")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{int((~torch.isfinite(out)).sum())} elements are not finite")
    error = float((out.double() - expected.double()).norm() / expected.double().norm())
    if error > tolerance:
        raise AssertionError(f"relative error {error:.3g} > {tolerance:.3g}")


@pytest.fixture
def assert_relative_error() -> Callable[[torch.Tensor, torch.Tensor, float], None]:
    """Checks ‖out − expected‖ / ‖expected‖ against a tolerance (METHOD: bf16 ~1e-2)."""
    return _assert_relative_error
