"""The records and names every layer shares: small frozen dataclasses, the errors that carry
them, and the lineage tag and alias names.

Neutral ground: flows, tasks, backends, the CLI and the tests import from here, and nothing here
imports anything of ours, so a record can cross any layer without dragging a backend along.
One module per subject: `workspace` (data, pipeline runs, models, pipeline asset references),
`serving` (endpoints, deployments, their health and collected rows), `infra` (what-if plans),
`audit` (the audit trail's entries), `lineage_tags` (the tag names a model carries), `aliases`
(the alias names: which version holds which role) and `lineage` (the code commit a model was
trained from).
"""
