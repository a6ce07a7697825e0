"""Release stage: a candidate on a test endpoint (`serving`) proven by integration tests
(`integration_tests`), a person's decision (`approval`), promotion to the shared registry
(`promotion`), and one change to an endpoint at a time (`endpoint_lease`)."""
