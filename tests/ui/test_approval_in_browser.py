"""A person approves a release in the Prefect UI's Resume form, in a real (headless) browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import backends
from audit import read_audit_log
from backends.local.endpoints import stop_all
from records import aliases, lineage_tags
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tests.integration.release_helpers import publish_working_tree_assets, wait_for_paused_release

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium")
MODEL = load_training_settings().model_name

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)


@pytest.fixture
def paused_release(mlops_root: Path, tmp_path: Path):
    data = tmp_path / "data.csv"
    generate_readmissions(8_000, seed=61).to_csv(data, index=False)
    publish_working_tree_assets()
    started = datetime.now(UTC).isoformat()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from flows.release import release; release(data_path={str(data)!r})",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=(tmp_path / "release.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield wait_for_paused_release(timeout=300, started_after=started), process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for workspace in (mlops_root / "workspaces").glob("*"):
            stop_all(workspace)


def test_approval_in_the_prefect_ui_form_promotes(paused_release, mlops_root: Path) -> None:
    from playwright.sync_api import sync_playwright

    run_id, process = paused_release
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Candidate vs champion", exact=True).wait_for()
        dialog.get_by_text("Patient groups: candidate vs champion").wait_for()  # the groups
        dialog.get_by_role("switch").first.click()
        fields = dialog.locator("textarea, input[type=text]")
        fields.nth(0).fill("ursula (UI)")
        fields.nth(1).fill("evidence pack reviewed in the Prefect UI")
        page.screenshot(path=str(SCREENSHOTS / "approval-form.png"), full_page=True)
        dialog.get_by_role("button", name="Submit").click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "after-submit.png"), full_page=True)
        browser.close()

    assert process.wait(timeout=300) == 0
    champion = backends.shared_registry().get_model(MODEL, aliases.CHAMPION)
    assert champion is not None and champion.tags[lineage_tags.APPROVED_BY] == "ursula (UI)"
    assert ("approved", "ursula (UI)") in [(r.action, r.actor) for r in read_audit_log()]
    assert (SCREENSHOTS / "approval-form.png").stat().st_size > 10_000
