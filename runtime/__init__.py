"""The serving runtime: engine, model runner, models, sampler, HTTP server and CLI."""
