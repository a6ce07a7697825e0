"""The `mlops` command line: demo, Prefect server, and (later) approvals."""
