"""The lifecycle's Prefect tasks, grouped by stage: `data` (the data gate and the data asset),
`training/` (the pipeline run and its quality gate, registration, pipeline assets), `release/`
(the test endpoint and its integration tests, the approval, promotion, serving, the endpoint
lease), `rollout/` (prod's baked steps, their judge, record, stop and canaries), `rollback`,
`monitoring` (drift) and `infra`. Each calls the backends through the facade (`import backends`)
and takes its values from `settings`."""
