"""Start, find and stop a real Prefect server on a free loopback port.

Used by the demo (a server that outlives the command, so the UI can be opened afterwards) and
by the test session (a throwaway server in a temp PREFECT_HOME, stopped by pid at the end).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from backends.processes import stop_group


@dataclass(frozen=True)
class PrefectServer:
    pid: int
    port: int
    home: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prefect_executable() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def start_server(home: Path, port: int | None = None, timeout: float = 90.0) -> PrefectServer:
    """Start `prefect server start` in its own process group and wait until it is healthy."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    log = (home / "server.log").open("ab")
    process = subprocess.Popen(
        [_prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = PrefectServer(process.pid, port, str(home))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Prefect server exited with code {process.returncode}; see {home / 'server.log'}"
            )
        if server.healthy():
            (home / "server.json").write_text(json.dumps(server.__dict__))
            return server
        time.sleep(0.5)
    stop_server(server)
    raise TimeoutError(
        f"Prefect server not healthy after {timeout:.0f} s; see {home / 'server.log'}"
    )


def running_server(home: Path) -> PrefectServer | None:
    """The server this home started earlier, if it still answers."""
    state = home / "server.json"
    if not state.exists():
        return None
    server = PrefectServer(**json.loads(state.read_text()))
    return server if server.healthy() else None


def stop_server(server: PrefectServer, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if the server is still up."""
    stop_group(server.pid, timeout, kill_timeout=timeout)
    (Path(server.home) / "server.json").unlink(missing_ok=True)
