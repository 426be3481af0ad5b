"""Helpers of the e2e tests: the operator process, LLMService reads and waits, prerequisites."""
