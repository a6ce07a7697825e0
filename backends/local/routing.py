"""Which deployment answers a request: the routing table of live and mirrored traffic. The
checks a traffic change must pass are Azure's, in backends/traffic_rules.py.
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
