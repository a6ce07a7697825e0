"""Which deployment answers a request: the routing table of live and mirrored traffic, and the
checks a traffic change must pass (AML's rules: weights sum to 100, one mirror target, ...).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.local.endpoint_state import DeploymentSpec

if TYPE_CHECKING:
    from backends.local.data_collector import DataCollector
    from backends.local.deployment_process import InferenceServer


@dataclass(frozen=True)
class Deployment:
    """A deployment in the routing table: its spec and its running inference server (with the
    data collector beside it), or why it has none."""

    spec: DeploymentSpec
    server: InferenceServer | None
    collector: DataCollector | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Its inference server answered its health probe and has not exited since."""
        return self.server is not None and self.server.running

    @property
    def state(self) -> str:
        return "Succeeded" if self.ready else "Failed"

    def describe(self) -> dict[str, Any]:
        server = self.server
        error = self.error
        if server is not None and not server.running:
            error = (
                f"its inference server exited (code {server.process.poll()}); see {server.log_path}"
            )
        return {
            "name": self.spec.name,
            "model_name": self.spec.model_name,
            "model_version": self.spec.model_version,
            "model_path": self.spec.model_path,
            "code": self.spec.code,
            "variables": dict(self.spec.variables),
            "state": self.state,
            "error": error,
            "pid": server.pid if server else None,
            "port": server.port if server else None,
            "scoring_uri": f"{server.base_url}/score" if server else None,
            "collector_port": self.collector.port if self.collector else None,
            "log": str(server.log_path) if server else None,
        }


# --- routing: which deployment answers ---------------------------------------------------------


class TrafficError(ValueError):
    """A traffic change or deletion that would leave the endpoint in a bad state."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Routing:
    """An immutable snapshot of deployments and weights. Admin calls build a new one and swap
    the reference, so a request in flight keeps the snapshot it started with."""

    def __init__(
        self,
        deployments: Mapping[str, Deployment],
        traffic: Mapping[str, int],
        mirror_traffic: Mapping[str, int],
    ) -> None:
        self.deployments = dict(deployments)
        self.traffic = {name: int(traffic.get(name, 0)) for name in self.deployments}
        self.mirror_traffic = {n: int(p) for n, p in mirror_traffic.items() if p > 0}
        live = [(name, pct) for name, pct in self.traffic.items() if pct > 0]
        self._live = [self.deployments[name] for name, _ in live]
        self._cumulative = list(np.cumsum([pct for _, pct in live]))
        self._mirrors = [(self.deployments[n], p) for n, p in self.mirror_traffic.items()]

    def pick(self) -> Deployment | None:
        """A live deployment drawn by weight, or None when nothing has traffic."""
        if not self._live:
            return None
        if len(self._live) == 1:
            return self._live[0]
        draw = random.random() * self._cumulative[-1]
        return self._live[bisect.bisect_right(self._cumulative, draw)]

    def mirrors(self) -> list[Deployment]:
        return [d for d, pct in self._mirrors if random.random() * 100 < pct]

    def specs(self) -> dict[str, DeploymentSpec]:
        return {name: d.spec for name, d in self.deployments.items()}


def check_traffic(
    deployments: Mapping[str, Deployment],
    traffic: Mapping[str, int],
    mirror_traffic: Mapping[str, int],
) -> None:
    """AML's rules: known names, 0-100, live traffic adds up to 100 (0 only with no
    deployments), one mirror target that takes no live traffic, and no traffic to a
    deployment that is not running (it failed to start, or its server exited)."""
    known = sorted(deployments)
    for kind, weights in (("traffic", traffic), ("mirror_traffic", mirror_traffic)):
        unknown = sorted(set(weights) - set(deployments))
        if unknown:
            raise TrafficError(
                422, f"{kind} names {unknown}, which this endpoint does not have; it has {known}"
            )
        for name, pct in weights.items():
            if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
                raise TrafficError(422, f"{kind}[{name!r}] = {pct!r}; use a whole percent 0-100")
    total = sum(traffic.values())
    if deployments and total != 100:
        raise TrafficError(
            422,
            f"traffic adds up to {total}%; it must add up to 100% across {known} "
            "(0% is only allowed when the endpoint has no deployments)",
        )
    broken = sorted(n for n, p in traffic.items() if p > 0 and not deployments[n].ready)
    if broken:
        raise TrafficError(
            409, f"deployments {broken} are not running and cannot take traffic; redeploy them"
        )
    mirrored = [n for n, p in mirror_traffic.items() if p > 0]
    if len(mirrored) > 1:
        raise TrafficError(422, f"mirror_traffic names {mirrored}; mirror to one deployment")
    for name in mirrored:
        if traffic.get(name, 0) > 0:
            raise TrafficError(
                422,
                f"{name!r} takes {traffic[name]}% of live traffic, so it cannot also be the "
                "mirror target; set its mirror_traffic to 0 in the same call",
            )
        if not deployments[name].ready:
            raise TrafficError(409, f"{name!r} is not running and cannot receive mirror traffic")
