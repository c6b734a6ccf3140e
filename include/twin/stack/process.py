"""Start, find and stop one server process of the local stack by its PID file.

Every server runs in its own session (process group), so stopping it reaches the children it
forked too. A PID file records the PID and the process start time, so a PID reused by an
unrelated process after a crash is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


class StackError(RuntimeError):
    """A component of the local stack could not be started, checked or stopped; the message says why."""


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None when it has exited (or the PID was reused)."""
        try:
            proc = psutil.Process(self.pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            # create_time is rounded differently by kernels; a second of slack keeps reuse detection.
            if alive and abs(proc.create_time() - self.create_time) < 1.0:
                return proc
        except psutil.Error:
            pass
        return None


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), float(data["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_pid_file(path: Path, pid: int) -> PidRecord:
    record = PidRecord(pid, psutil.Process(pid).create_time())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": record.pid, "create_time": record.create_time}) + "\n")
    return record


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (a listener on 0.0.0.0 also makes the bind fail)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path, user: str | None = None) -> int:
    """Start argv detached in a new session, output appended to log; returns its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True, user=user, group=group_of(user), extra_groups=[] if user else None,
        )
    # The child outlives this process (`twin stack up` returns); nobody waits on it here, so drop the
    # Popen handle without a ResourceWarning. Its exit is seen through the PID file and psutil.
    proc.returncode = 0
    return proc.pid


def group_of(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def process_tree(root: psutil.Process | None, pgid: int) -> list[psutil.Process]:
    """The root, its descendants and every process still in its process group (children the root
    lost, e.g. after it crashed, keep the group id)."""
    found: dict[int, psutil.Process] = {}
    if root is not None:
        with contextlib.suppress(psutil.Error):
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.pid not in found and os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
    return list(found.values())


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    result = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                result.append(proc)
    return result


def stop_tree(record: PidRecord, stop_signal: int, timeout: float, whole_tree: bool = False) -> list[int]:
    """Stop a server and all its processes: stop_signal to the leader (so it shuts its children
    down in order) or, with whole_tree, to every process at once; then SIGTERM to what is left,
    then SIGKILL after the timeout.

    Returns the PIDs that were stopped; raises StackError if any survives SIGKILL.
    """
    root = record.process()
    procs = process_tree(root, record.pid)
    pids = [p.pid for p in procs]
    for proc in procs if whole_tree else [root] if root is not None else []:
        _signal(proc, stop_signal)
    remaining = _wait_gone(procs, timeout * 0.75)
    for proc in remaining:
        _signal(proc, signal.SIGTERM)
    remaining = _wait_gone(remaining, timeout * 0.25)
    for proc in remaining:
        _signal(proc, signal.SIGKILL)
    remaining = _wait_gone(remaining, 5)
    _reap(procs)
    if remaining:
        raise StackError(f"processes survived SIGKILL: {[p.pid for p in remaining]}")
    return pids


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    remaining = alive(procs)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        _reap(remaining)
        remaining = alive(remaining)
    return remaining


def _reap(procs: list[psutil.Process]) -> None:
    """Collect the exit status of servers this very process started, so they do not linger as zombies."""
    for proc in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - chars))
            return handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
