"""The names of the tags a model version (and a data asset) carries: its lineage.

Every tag name is written once, here; code that writes or reads a tag imports its constant, and
`tests/unit/test_layers.py` fails when one of these names is written as a string literal
anywhere else in our Python (the component scripts under components/ run in their own image
and cannot import this; the scoring script gets the threshold through the deployment's
environment, not the tag).
"""

from __future__ import annotations

# --- registration: where a trained model came from (tasks/training/registry.py) -------------

DATA_ASSET = "data_asset"
"""The data asset the model was trained on."""
DATA_VERSION = "data_version"
"""Its version (a new version only when the content changes)."""
DATA_SHA256 = "data_sha256"
"""Its content hash, checked when the drift monitor reads the reference data back."""
PIPELINE_RUN_ID = "pipeline_run_id"
"""The training pipeline's run: identifies the version (registration is idempotent on it)."""
TRAIN_RUN_ID = "train_run_id"
"""The train step's run inside the pipeline run."""
GIT_COMMIT = "git_commit"
"""The code commit the pipeline ran from (records.lineage.git_commit)."""
PIPELINE_ASSETS = "pipeline_assets"
"""The digest of the asset set (components + environments) the pipeline ran."""
PIPELINE_ASSETS_FROM = "pipeline_assets_from"
"""The store those assets were taken from (the workspace in dev, the shared registry after)."""
GATE = "gate"
"""The quality gate's verdict ("passed": only gated models are registered)."""
TEST_METRIC_PREFIX = "test_"
"""Each test-set figure of the evaluation is a tag `test_<metric>` (see metric_tag)."""
TEST_THRESHOLD = "test_threshold"
"""The decision threshold chosen at evaluation: deployments label `probability >= it` as 1."""

# --- promotion: the approval that let it into the shared registry (tasks/release/promotion.py)

SOURCE_WORKSPACE = "source_workspace"
"""The workspace it was promoted from."""
APPROVED_BY = "approved_by"
APPROVAL_REASON = "approval_reason"
RELEASE_FLOW_RUN_ID = "release_flow_run_id"
"""The release run that promoted it."""
PROMOTED_FROM = "promoted_from"
"""`<workspace>:<name>:<version>` of the source: identifies the registry's copy (idempotent)."""
SOURCE_RUN_ID = "source_run_id"
"""The training run in the source workspace's tracking store."""
SOURCE_ASSET_ID = "source_asset_id"
"""Azure: the workspace model's asset id the registry copy was imported from."""

# --- backend bookkeeping --------------------------------------------------------------------

RUN_ID = "run_id"
"""Azure: the training run of a model version (AML models have no run field of their own)."""
CONTENT_SHA256 = "content_sha256"
"""Azure data assets: the content hash that decides whether a file is a new version."""
SOURCE_FILE = "source_file"
"""Azure data assets: the name of the file it was registered from."""


def metric_tag(metric: str) -> str:
    """The tag holding a test-set figure of the evaluation (`auc` -> `test_auc`)."""
    return TEST_METRIC_PREFIX + metric
