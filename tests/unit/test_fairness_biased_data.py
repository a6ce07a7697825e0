"""The generator's biased-label option: one payer's readmissions under-recorded, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from data_checks.readmission_schema import LABEL
from synthetic_data.readmissions import RecordingBias, generate_readmissions

REPO_ROOT = Path(__file__).resolve().parents[2]
MEDICAID_HALF = RecordingBias(payer_code="Medicaid", unrecorded_share=0.5)


@pytest.fixture(scope="module")
def fair() -> pd.DataFrame:
    return generate_readmissions(20_000, seed=4)


@pytest.fixture(scope="module")
def biased() -> pd.DataFrame:
    return generate_readmissions(20_000, seed=4, bias=MEDICAID_HALF)


def test_the_bias_is_off_by_default(fair: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fair, generate_readmissions(20_000, seed=4, bias=None))


def test_only_the_payers_readmissions_lose_their_record(
    fair: pd.DataFrame, biased: pd.DataFrame
) -> None:
    pd.testing.assert_frame_equal(fair.drop(columns=[LABEL]), biased.drop(columns=[LABEL]))
    changed = fair[LABEL] != biased[LABEL]
    assert changed.any()
    assert (fair.loc[changed, LABEL] == 1).all() and (biased.loc[changed, LABEL] == 0).all()
    assert set(fair.loc[changed, "payer_code"]) == {"Medicaid"}
    medicaid_readmitted = (fair["payer_code"] == "Medicaid") & (fair[LABEL] == 1)
    share = changed.sum() / medicaid_readmitted.sum()
    assert share == pytest.approx(MEDICAID_HALF.unrecorded_share, abs=0.05)


def test_the_same_seed_and_bias_give_the_same_rows(biased: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(biased, generate_readmissions(20_000, seed=4, bias=MEDICAID_HALF))


@pytest.mark.parametrize(
    ("payer", "share", "message"),
    [("Medicade", 0.5, "Unknown payer code 'Medicade'"), ("Medicaid", 1.5, "between 0 and 1")],
)
def test_a_bad_bias_is_refused_with_what_to_use(payer: str, share: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecordingBias(payer, share)


def test_the_command_line_writes_biased_data_and_refuses_a_bad_option(tmp_path: Path) -> None:
    out = tmp_path / "biased.csv"
    command = [sys.executable, "-m", "synthetic_data.readmissions", "--rows", "2000", "--seed"]
    done = subprocess.run(
        [*command, "4", "--out", str(out), "--under-record", "Medicaid=0.5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "50% of Medicaid readmissions unrecorded" in done.stdout
    written = pd.read_csv(out)
    expected = generate_readmissions(2000, seed=4, bias=MEDICAID_HALF)
    assert written[LABEL].tolist() == expected[LABEL].tolist()

    refused = subprocess.run(
        [*command, "4", "--out", str(out), "--under-record", "Medicaid"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "write it as Payer=share" in refused.stderr
