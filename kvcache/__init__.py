"""The paged KV-cache manager with hash-based prefix caching (pure: no torch, no I/O)."""
