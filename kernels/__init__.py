"""Triton kernels and the torch reference implementations they are tested against."""
