"""Benchmarks of the fixed workloads W1-W5 (DESIGN.md section 5): `llmservice bench ...`.

`workloads` defines the workloads and their prompts once; `offline` times our `LLM` and the
transformers peer on W1-W4, `serve` drives a running server through W5; `command` is the CLI.
"""
