"""Thin Prefect tasks: one backend operation each, with retries, artifacts and logging."""
