"""Errors raised by the KV-cache manager."""

from __future__ import annotations


class KVCacheIntegrityError(Exception):
    """`check_integrity()` found the block pool, free queue, cache map or block tables inconsistent."""
