"""The continuous-batching scheduler (pure: no torch, no I/O)."""
