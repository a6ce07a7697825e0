"""Prefect flows: the lifecycle runbooks. Orchestration only; tasks do the work."""
