"""The names of the model aliases: which version of a model holds which role in the lifecycle.

An alias points at exactly one version of a model in one store (a workspace, or the shared
registry; Azure ML emulates aliases with tags, backends/azure/aliases.py). Every alias name is
written once, here; code that sets or reads an alias imports its constant, and
`tests/unit/test_layers.py` fails when one of these names is passed as an alias in a string
literal anywhere else in our Python. ("champion" and "candidate" are also the keys of the
evaluation's metrics.json and fairness.json, written by the component scripts, which cannot
import this: those keys name a model's figures, not an alias.)
"""

from __future__ import annotations

CHAMPION = "champion"
"""In a workspace (dev): the environment's best gated model. train-dev points it at each version
that passed the gate, which includes matching the champion before it; before any release the
training gate compares candidates with it (tasks.training.pipeline.find_champion).
In the shared registry: the version serving prod. It moves only when a rollout ends healthy
(tasks.release.promotion.crown_champion) or on a rollback (tasks.rollback.restore_champion);
monitoring, batch scoring and the training gate read it."""

CANDIDATE = "candidate"
"""In the test workspace: the release's model, retrained on the full data and gated against
prod's champion, awaiting the integration tests and a person's approval (flows/release.py)."""

CHALLENGER = "challenger"
"""In the shared registry: the version last promoted by an approval
(tasks.release.promotion.promote_to_shared_registry): approved, not yet serving prod until its
rollout ends healthy and it is crowned champion."""

PREVIOUS_CHAMPION = "previous-champion"
"""In the shared registry: the champion before the current one, the last known good model and
the rollback's target (tasks.rollback.find_last_known_good). Crowning a new champion moves it to
the old one; a rollback points it at the restored champion too, so a second rollback finds
nothing to go back to."""
