"""Azure ML's traffic rules (backends/traffic_rules.py), one refusal per rule, and the routings
they accept: the module the local endpoint, the azure backend and the fake all call."""

from __future__ import annotations

import numpy as np
import pytest

from backends.traffic_rules import (
    MAX_MIRROR_PERCENT,
    RequestRefused,
    check_deletable,
    check_traffic,
)

DEPLOYMENTS = ("blue", "green", "canary")


@pytest.mark.parametrize(
    ("traffic", "mirror"),
    [
        ({"blue": 100}, {}),
        ({"blue": 100, "green": 0}, {"green": MAX_MIRROR_PERCENT}),
        ({"blue": 90, "green": 10}, {}),
        ({"blue": 0, "green": 0}, {}),  # 0% disables traffic
        ({}, {}),
        ({"blue": 70, "green": 30}, {"canary": 20, "green": 0}),
        ({"blue": np.int64(100)}, {}),  # whole numbers of any integer type
    ],
)
def test_routings_azure_accepts_pass(traffic: dict[str, int], mirror: dict[str, int]) -> None:
    check_traffic("readm", DEPLOYMENTS, traffic, mirror)


def test_an_endpoint_without_deployments_takes_no_weights() -> None:
    check_traffic("readm", (), {}, {})
    with pytest.raises(RequestRefused, match="has no deployments \\['blue'\\]"):
        check_traffic("readm", (), {"blue": 100}, {})


@pytest.mark.parametrize(
    ("traffic", "mirror", "not_running", "status", "reason"),
    [
        ({"blue": 100, "teal": 0}, {}, (), 422, "no deployments \\['teal'\\], named in traffic"),
        ({"blue": 100}, {"teal": 10}, (), 422, "no deployments \\['teal'\\], named in mirror"),
        ({"blue": 150, "green": -50}, {}, (), 422, "use a whole percent 0-100"),
        ({"blue": 50.5, "green": 49.5}, {}, (), 422, "use a whole percent 0-100"),
        ({"blue": True}, {}, (), 422, "use a whole percent 0-100"),
        ({"blue": 90}, {}, (), 422, "adds up to 90%; it must add up to 100%"),
        ({"blue": 60, "green": 50}, {}, (), 422, "adds up to 110%"),
        ({"blue": 100}, {"green": 10, "canary": 10}, (), 422, "mirror to one deployment at most"),
        ({"blue": 100}, {"green": 51}, (), 422, "mirror at most 50%"),
        ({"blue": 50, "green": 50}, {"green": 10}, (), 422, "live or mirrored, never both"),
        ({"blue": 50, "green": 50}, {}, ("green",), 409, "\\['green'\\] are not running"),
        ({"blue": 100}, {"green": 10}, ("green",), 409, "\\['green'\\] are not running"),
    ],
)
def test_each_rule_refuses_naming_itself(
    traffic: dict[str, int],
    mirror: dict[str, int],
    not_running: tuple[str, ...],
    status: int,
    reason: str,
) -> None:
    with pytest.raises(RequestRefused, match=reason) as refused:
        check_traffic("readm", DEPLOYMENTS, traffic, mirror, not_running)

    assert refused.value.status == status
    assert refused.value.reason == str(refused.value)


def test_a_deployment_that_is_not_running_may_keep_zero_weights() -> None:
    check_traffic("readm", DEPLOYMENTS, {"blue": 100, "green": 0}, {"green": 0}, ["green"])


def test_a_deployment_with_live_or_mirror_traffic_cannot_be_deleted() -> None:
    check_deletable("readm", "green", {"blue": 100, "green": 0}, {})
    with pytest.raises(RequestRefused, match="still takes 100% of live") as live:
        check_deletable("readm", "blue", {"blue": 100}, {})
    with pytest.raises(RequestRefused, match="10% of mirror traffic; shift its traffic"):
        check_deletable("readm", "green", {"blue": 100}, {"green": 10})

    assert live.value.status == 409
