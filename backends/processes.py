"""The processes we start and stop ourselves (endpoint servers, inference servers, a Prefect
server, benchmark servers): whether one still runs, what it runs, and stopping it, by pid or
process group and never by name. psutil does the asking and the waiting.

A zombie (exited, not reaped by its parent yet) counts as gone: a server whose parent died is
re-parented to an init that may never reap it, and waiting for it would wait out every timeout.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import psutil

KILL_TIMEOUT = 5.0
"""How long a SIGKILL may take to show (seconds)."""
_POLL = 0.05


def alive(pid: int) -> bool:
    """Running: a zombie is not; a process we may not inspect is."""
    try:
        return _running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def command_line(pid: int) -> list[str] | None:
    """Its arguments, None if it is gone or not ours to read."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return None


def working_directory(pid: int) -> Path | None:
    """Its working directory, None if it is gone or not ours to read."""
    try:
        return Path(psutil.Process(pid).cwd())
    except psutil.Error:
        return None


def stop_process(pid: int, timeout: float, kill_timeout: float = KILL_TIMEOUT) -> bool:
    """SIGTERM, up to `timeout` seconds to end, then SIGKILL; True if it was running. A child
    of ours is reaped; a pid reused by another process since is left alone (psutil checks)."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    if not _running(process):
        return False
    for send, wait in ((process.terminate, timeout), (process.kill, kill_timeout)):
        try:
            send()
        except psutil.NoSuchProcess:
            break
        if _ended(process, wait):
            break
    return True


def stop_group(
    pgid: int, timeout: float, kill_timeout: float = KILL_TIMEOUT, kill_survivors: bool = False
) -> None:
    """SIGTERM to the process group, up to `timeout` seconds for its leader to end, then SIGKILL
    to the group and up to `kill_timeout` more. With `kill_survivors`, a last SIGKILL to the
    members that outlived their leader (gunicorn's workers)."""
    try:
        leader: psutil.Process | None = psutil.Process(pgid)
    except psutil.NoSuchProcess:
        leader = None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        if not _signal_group(pgid, sig) or _ended(leader, wait):
            break
    if kill_survivors:
        _signal_group(pgid, signal.SIGKILL)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _ended(process: psutil.Process | None, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to end; reaps it if it is our child."""
    if process is None:
        return True
    deadline = time.monotonic() + timeout
    while True:
        with suppress(psutil.TimeoutExpired):
            process.wait(timeout=_POLL)
            return True
        if not _running(process):
            return True  # a zombie whose parent has not reaped it
        if time.monotonic() >= deadline:
            return False


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
