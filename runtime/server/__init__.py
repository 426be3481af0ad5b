"""The OpenAI-compatible HTTP server (`llmservice serve`).

The API process (this package, aiohttp + uvloop, no torch) validates requests, renders chat
templates, tokenizes, detokenizes incrementally and streams SSE; the EngineCore runs in a process
of its own (`core_process`) and talks to it over ZMQ (`core_client`).
"""
