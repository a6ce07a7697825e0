"""A process killed while MLflow migrates a new store leaves no half-migrated store behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from backends.local.workspace import MlflowRegistry

REPO = Path(__file__).resolve().parents[2]

KILLED_MID_MIGRATION = """
import os, signal, sys
from mlflow.store.db import utils
import backends.local.workspace as workspace

def create_tables_then_die(engine):
    utils.InitialBase.metadata.create_all(engine)  # the first revision's tables exist ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the upgrades

utils._initialize_tables = create_tables_then_die  # what MLflow's store calls to migrate
workspace.MlflowRegistry(__import__("pathlib").Path(sys.argv[1]))
"""


def test_a_store_killed_mid_migration_is_created_whole_on_the_next_open(tmp_path: Path) -> None:
    store = tmp_path / "registry"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_MIGRATION, str(store)], cwd=REPO, check=False
    )

    assert killed.returncode == -9
    assert not (store / "mlflow.db").exists()  # nothing half-made under the real name
    registry = MlflowRegistry(store)
    registry.experiment_id("training")
    version = registry.register_once(
        "m", str(tmp_path), None, {"source": "a"}, "first", identity_tag="source"
    )
    assert version.version == "1"
