"""Run the components of the local stack: `up` (idempotent, in dependency order), `status`, `down`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby

import psutil

from twin.settings import LOOPBACK, Settings, get_settings
from twin.stack.components import AirflowApiServer, Component, build_components
from twin.stack.process import (
    PidRecord,
    StackError,
    log_tail,
    port_is_free,
    process_tree,
    read_pid_file,
    spawn,
    stop_tree,
    write_pid_file,
)


def pss_bytes(pid: int) -> int:
    """A process's PSS from /proc/<pid>/smaps_rollup (0 when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class ComponentMemory:
    name: str
    processes: int
    pss_bytes: int


# Names that stand for several components on the command line.
GROUPS = {"airflow": ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")}
POLL_S = 0.5

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class StartResult:
    name: str
    started: bool  # False: it was already running and healthy, and was left alone
    seconds: float  # from the start of its stage until it answered healthy


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    url: str
    healthy: bool

    @property
    def state(self) -> str:
        if self.pid is None:
            return "down"
        return "healthy" if self.healthy else "UNHEALTHY"


@dataclass(frozen=True)
class StopResult:
    name: str
    pids: list[int]  # every process of the component that was stopped
    seconds: float


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.components = build_components(settings)
        self.by_name = {c.name: c for c in self.components}
        self.stack_dir = settings.stack_dir

    # --- selection ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def select(self, only: Iterable[str] | None = None, closure: str = "requires") -> list[Component]:
        """Components named in `only` (all when None) plus what they require (for `up`) or what
        requires them (for `down`), in start order."""
        if only is None:
            return list(self.components)
        wanted = set()
        for name in only:
            name = name.strip()
            if name in GROUPS:
                wanted.update(GROUPS[name])
            elif name in self.by_name:
                wanted.add(name)
            elif name:
                valid = ", ".join([*self.names(), *GROUPS])
                raise StackError(f"unknown stack component {name!r}; choose from: {valid}")
        grow = True
        while grow:
            before = len(wanted)
            for comp in self.components:
                if closure == "requires" and comp.name in wanted:
                    wanted.update(comp.requires)
                if closure == "dependents" and wanted.intersection(comp.requires):
                    wanted.add(comp.name)
            grow = len(wanted) > before
        return [c for c in self.components if c.name in wanted]

    # --- up ----------------------------------------------------------------------------------

    def up(self, only: Iterable[str] | None = None, progress: Progress = _quiet) -> list[StartResult]:
        """Start what is not running yet, stage by stage; healthy running components are left alone."""
        selected = self.select(only)
        results: list[StartResult] = []
        with self._lock():
            self._expect([c.name for c in selected])
            for _, stage in groupby(selected, key=lambda c: c.stage):
                results += self._start_stage(list(stage), progress)
        return results

    def _start_stage(self, stage: list[Component], progress: Progress) -> list[StartResult]:
        begun = time.monotonic()
        to_start = [c for c in stage if self._process(c) is None]
        for comp in to_start:
            if comp.pid_file.exists():  # it died: stop what is left of its process group first
                self._stop(comp)
        for comp in to_start:
            self._check_ports(comp)
        for comp in to_start:
            progress(f"starting {comp.name} (log {comp.log})")
            comp.prepare()
            write_pid_file(comp.pid_file, spawn(comp.command(), comp.log, comp.env(), comp.cwd(), comp.user))
        waited = self._wait_healthy(stage)
        results = []
        for comp in stage:
            comp.after_healthy()
            results.append(StartResult(comp.name, comp in to_start, waited[comp.name] - begun))
            progress(f"{comp.name} healthy after {results[-1].seconds:.1f}s" if comp in to_start
                     else f"{comp.name} healthy (already running)")
        return results

    def _check_ports(self, comp: Component) -> None:
        for port in comp.ports():
            if not port_is_free(port.number, LOOPBACK):
                raise StackError(f"{comp.name}: port {port.number} on {LOOPBACK} is already in use"
                                 f"{_holder(port.number)}; set {port.variable} to a free port")

    def _wait_healthy(self, stage: list[Component]) -> dict[str, float]:
        """Wait until every component of the stage answers; returns when each became healthy."""
        deadline = time.monotonic() + self.settings.stack_start_timeout_s
        pending = list(stage)
        done: dict[str, float] = {}
        while pending:
            for comp in list(pending):
                if self._process(comp) is None:
                    self._stop(comp)  # children it left behind
                    raise StackError(f"{comp.name} exited during start-up; log {comp.log}:\n{log_tail(comp.log)}")
                if comp.healthy():
                    done[comp.name] = time.monotonic()
                    pending.remove(comp)
            if pending and time.monotonic() > deadline:
                comp = pending[0]
                self._stop(comp)
                raise StackError(
                    f"{comp.name} did not become healthy within {self.settings.stack_start_timeout_s:.0f}s "
                    f"(TWIN_STACK_START_TIMEOUT_S) and was stopped; log {comp.log}:\n{log_tail(comp.log)}")
            if pending:
                time.sleep(POLL_S)
        return done

    # --- status ------------------------------------------------------------------------------

    def status(self, only: Iterable[str] | None = None) -> list[ComponentStatus]:
        selected = self.select(only, closure="none") if only is not None else self.components
        rows = []
        for comp in selected:
            proc = self._process(comp)
            rows.append(ComponentStatus(comp.name, proc.pid if proc else None, comp.url(),
                                        proc is not None and comp.healthy()))
        return rows

    def memory(self, only: Iterable[str] | None = None) -> list[ComponentMemory]:
        """Proportional set size (PSS) of each running component's whole process tree: shared pages are
        split between the processes that map them, so the sum is what the stack really holds."""
        selected = self.select(only, closure="none") if only is not None else self.components
        rows = []
        for comp in selected:
            proc = self._process(comp)
            if proc is None:
                continue
            tree = process_tree(proc, proc.pid)
            rows.append(ComponentMemory(comp.name, len(tree), sum(pss_bytes(p.pid) for p in tree)))
        return rows

    def expected(self) -> list[str]:
        """Components the last `up` calls asked for and no `down` has stopped since."""
        try:
            return list(json.loads((self.stack_dir / "expected.json").read_text()))
        except (OSError, ValueError):
            return []

    def airflow_credentials(self) -> tuple[str, str | None]:
        api = self.by_name["airflow-api-server"]
        assert isinstance(api, AirflowApiServer)
        return api.credentials()

    # --- down --------------------------------------------------------------------------------

    def down(self, only: Iterable[str] | None = None, progress: Progress = _quiet) -> list[StopResult]:
        """Stop in reverse start order (and whatever depends on what is stopped); remove PID files."""
        selected = self.select(only, closure="dependents")
        results = []
        with self._lock():
            for comp in reversed(selected):
                if comp.pid_file.exists():
                    begun = time.monotonic()
                    pids = self._stop(comp)
                    results.append(StopResult(comp.name, pids, time.monotonic() - begun))
                    progress(f"stopped {comp.name} ({len(pids)} processes, {results[-1].seconds:.1f}s)")
            remaining = [n for n in self.expected() if n not in {c.name for c in selected}]
            self._write_expected(remaining)
        return results

    def _stop(self, comp: Component) -> list[int]:
        record = read_pid_file(comp.pid_file)
        pids = stop_tree(record, comp.stop_signal, self.settings.stack_stop_timeout_s,
                                comp.stop_whole_tree) if record else []
        comp.pid_file.unlink(missing_ok=True)
        return pids

    # --- bookkeeping -------------------------------------------------------------------------

    def _process(self, comp: Component) -> psutil.Process | None:
        record: PidRecord | None = read_pid_file(comp.pid_file)
        return record.process() if record else None

    def _expect(self, names: list[str]) -> None:
        self._write_expected([n for n in self.names() if n in set(self.expected()) | set(names)])

    def _write_expected(self, names: list[str]) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        (self.stack_dir / "expected.json").write_text(json.dumps(names) + "\n")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up` or `down` at a time per data dir (two would race on the same PID files)."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        with (self.stack_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _holder(port: int) -> str:
    """' by PID n (name)' for the process listening on the port, where the system lets us see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by PID {conn.pid} ({psutil.Process(conn.pid).name()})"
    return ""


def ensure_stack(settings: Settings | None = None, only: Iterable[str] | None = None,
                 progress: Progress = _quiet) -> Stack:
    """Bring the local stack (or the named components and what they need) up and healthy; for the demo."""
    stack = Stack(settings or get_settings())
    stack.up(only, progress)
    return stack
