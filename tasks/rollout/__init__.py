"""Prod rollout: traffic moved to the new deployment in baked steps (`steps`), each judged on
what it served (`judge`), its progress and stop requests kept in Prefect Variables (`record`,
`stop`), and the canary requests that keep a step judgeable (`canaries`)."""
