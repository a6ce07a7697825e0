"""Stopping the processes we start: by pid or process group, SIGKILL only for what ignores
SIGTERM, a zombie counted as gone, a child of ours reaped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from backends.processes import (
    alive,
    command_line,
    stop_group,
    stop_process,
    working_directory,
)

IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""

LEADER_WITH_A_STUBBORN_WORKER = f"""
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", {IGNORES_SIGTERM!r}], stdout=subprocess.PIPE)
worker.stdout.readline()
print(worker.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left is killed at the end, by pid."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start(
    started: list[subprocess.Popen[bytes]],
    code: str,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        cwd=cwd,
        start_new_session=new_session,
    )
    started.append(process)
    return process


def test_a_process_that_ends_on_sigterm_is_stopped_and_reaped(started: list) -> None:
    process = _start(started, "import time; print('ready', flush=True); time.sleep(60)")
    process.stdout.readline()

    began = time.monotonic()
    assert stop_process(process.pid, timeout=10.0)

    assert time.monotonic() - began < 5.0  # no SIGKILL timeout waited out
    assert not alive(process.pid)
    assert not psutil.pid_exists(process.pid)  # reaped, not left a zombie


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(started: list) -> None:
    process = _start(started, IGNORES_SIGTERM)
    process.stdout.readline()

    began = time.monotonic()
    assert stop_process(process.pid, timeout=0.5)

    assert 0.5 <= time.monotonic() - began < 5.0
    assert not alive(process.pid)


def test_a_pid_that_is_gone_is_not_stopped(started: list) -> None:
    process = _start(started, "pass")
    process.wait()

    assert not alive(process.pid)
    assert not stop_process(process.pid, timeout=1.0)
    stop_group(process.pid, timeout=1.0)  # no group left: returns at once, raises nothing


def test_a_zombie_is_not_alive(started: list) -> None:
    process = _start(started, "pass")
    zombie = psutil.Process(process.pid)
    deadline = time.monotonic() + 10
    while zombie.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)

    assert zombie.status() == psutil.STATUS_ZOMBIE
    assert not alive(process.pid)
    process.wait()


def test_a_group_is_stopped_and_survivors_only_when_asked(started: list) -> None:
    """SIGTERM ends the leader; its worker ignores SIGTERM and outlives it, and only
    `kill_survivors` kills it."""
    for kill_survivors in (False, True):
        leader = _start(started, LEADER_WITH_A_STUBBORN_WORKER, new_session=True)
        worker = int(leader.stdout.readline())

        stop_group(leader.pid, timeout=10.0, kill_survivors=kill_survivors)

        assert not alive(leader.pid)
        deadline = time.monotonic() + 5
        while alive(worker) and kill_survivors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert alive(worker) is not kill_survivors
        if alive(worker):
            assert stop_process(worker, timeout=0.1)


def test_what_a_process_runs_and_where(started: list, tmp_path: Path) -> None:
    process = _start(
        started, "import time; print('ready', flush=True); time.sleep(60)", cwd=tmp_path
    )
    process.stdout.readline()

    assert command_line(process.pid) == [
        sys.executable,
        "-c",
        "import time; print('ready', flush=True); time.sleep(60)",
    ]
    assert working_directory(process.pid) == tmp_path.resolve()
    stop_process(process.pid, timeout=5.0)
    assert command_line(process.pid) is None
    assert working_directory(process.pid) is None
