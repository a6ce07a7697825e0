"""Azure ML's rules for an online endpoint's traffic, in one place, and the one error for a
request an endpoint refuses.

The local endpoint server (backends/local/endpoint_server.py), the azure backend (which checks
before it starts a ten-minute update, backends/azure/endpoints.py) and the fake Azure REST API
(tests/azure/fake/endpoints.py) all call `check_traffic` and `check_deletable`, so the three can
no longer disagree about what Azure accepts.

The rules, and where Azure states them:

- Live weights are whole percents 0-100 (`traffic` is a map of int32 in the REST API) that add
  up to 100, or to 0 to disable traffic: "Percentage of traffic from endpoint to divert to each
  deployment. Traffic values need to sum to 100." (OnlineEndpoint.properties.traffic, Azure ML
  REST API 2024-04-01), and "The total traffic percentage must be either 0 percent, to disable
  traffic, or 100 percent, to enable traffic." (Azure ML docs, "Perform safe rollout of new
  deployments for real-time inference", how-to-safely-rollout-online-endpoints.md).
- Mirror traffic goes to one deployment at most, at most 50%: "You can mirror traffic to only
  one deployment in an endpoint." and "The maximum percentage of traffic you can mirror is 50
  percent." (same article, "Mirroring has the following limitations"); "Traffic values need to
  sum to utmost 50." (OnlineEndpoint.properties.mirrorTraffic, REST API 2024-04-01).
- A deployment takes live traffic or mirrored traffic, never both: "You can configure a
  deployment to receive only live traffic or mirrored traffic, not both." (same article).
- Every deployment named in either map exists on the endpoint (Azure answers 400 BadArgument
  otherwise; the weights are keyed by deployment name).
- A deployment that is not running (it failed to provision, or its server exited) takes no
  traffic; callers that cannot know (the azure backend, before Azure answers) pass no
  `not_running`.
- A deployment that still takes live or mirrored traffic cannot be deleted: "You can't delete a
  deployment that has live traffic allocated to it. Before you delete the deployment, set the
  traffic allocation for the deployment to 0 percent." (same article, "Remove the old
  deployment").

Each refusal is a `RequestRefused` whose reason names the rule and says what to send instead.
Statuses: 422 for a request no endpoint state could accept, 409 for one this endpoint's current
state refuses (the local server answers these; the fake answers every refusal as Azure does,
400 BadArgument with the reason as its message).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from numbers import Integral

MAX_MIRROR_PERCENT = 50
"""Azure's cap on mirrored traffic (see the module docstring)."""


class RequestRefused(ValueError):
    """A request an endpoint refused: `status` is the HTTP status it answered (or would
    answer), `reason` says which rule the request broke and what to send instead.

    The one error type for a refused request on the local endpoint (traffic, deletion, admin
    queries) and for the traffic rules checked before a call reaches Azure."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_traffic(
    endpoint: str,
    deployments: Collection[str],
    traffic: Mapping[str, int],
    mirror_traffic: Mapping[str, int],
    not_running: Collection[str] = (),
) -> None:
    """Refuse (RequestRefused) routing that Azure would refuse for `endpoint`, whose
    deployments are `deployments` (of which `not_running` cannot take traffic). Zero weights
    are allowed for any existing deployment; they mean "no traffic"."""
    known = sorted(deployments)
    for kind, weights in (("traffic", traffic), ("mirror_traffic", mirror_traffic)):
        unknown = sorted(set(weights) - set(deployments))
        if unknown:
            raise RequestRefused(
                422,
                f"endpoint {endpoint!r} has no deployments {unknown}, named in {kind}; it has "
                f"{known}: every deployment given a weight must exist",
            )
        for name, pct in weights.items():
            if isinstance(pct, bool) or not isinstance(pct, Integral) or not 0 <= pct <= 100:
                raise RequestRefused(422, f"{kind}[{name!r}] = {pct!r}; use a whole percent 0-100")
    total = sum(traffic.values())
    if total not in (0, 100):
        raise RequestRefused(
            422,
            f"traffic adds up to {total}%; it must add up to 100% across {known} (or to 0% "
            "to disable traffic)",
        )
    mirrored = sorted(name for name, pct in mirror_traffic.items() if pct > 0)
    if len(mirrored) > 1:
        raise RequestRefused(
            422, f"mirror_traffic names {mirrored}; mirror to one deployment at most"
        )
    for name in mirrored:
        if mirror_traffic[name] > MAX_MIRROR_PERCENT:
            raise RequestRefused(
                422,
                f"mirror_traffic[{name!r}] = {mirror_traffic[name]}%; mirror at most "
                f"{MAX_MIRROR_PERCENT}% of the traffic",
            )
        if traffic.get(name, 0) > 0:
            raise RequestRefused(
                422,
                f"{name!r} takes {traffic[name]}% of live traffic, so it cannot also be the "
                "mirror target (a deployment is live or mirrored, never both); set its "
                "mirror_traffic to 0 in the same call",
            )
    down = sorted(
        name
        for name in set(not_running)
        if traffic.get(name, 0) > 0 or mirror_traffic.get(name, 0) > 0
    )
    if down:
        raise RequestRefused(
            409,
            f"deployments {down} are not running and cannot take traffic (live or mirrored); "
            "redeploy them",
        )


def check_deletable(
    endpoint: str, deployment: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int]
) -> None:
    """Refuse (RequestRefused, 409) deleting a deployment that still takes traffic."""
    live, mirrored = traffic.get(deployment, 0), mirror_traffic.get(deployment, 0)
    if live > 0 or mirrored > 0:
        raise RequestRefused(
            409,
            f"deployment {deployment!r} of endpoint {endpoint!r} still takes {live}% of live "
            f"and {mirrored}% of mirror traffic; shift its traffic to another deployment "
            "first (a deployment with traffic cannot be deleted)",
        )
