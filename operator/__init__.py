"""The Kubernetes operator: LLMService schema, pure manifest builders, status logic, kopf handlers."""
