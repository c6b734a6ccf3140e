"""The whole local stack up once: every socket its processes listen on is loopback-only (read from the
kernel's socket tables, not from command lines), and the Airflow UI, logged in, lists the DAGs and
shows their Asset dependencies (screenshots in tests/output/airflow_ui/).

End to end (marker e2e): bringing up PostgreSQL, Mongo, MLflow, Airflow's four processes and Ray takes
minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.stack import private_stack, stack_process_tree
from twin.stack import Stack

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[1] / "output" / "airflow_ui"
DAG_IDS = {"crawl", "etl", "features", "datasets", "training", "smoke"}
ASSET_NAMES = {"raw_documents", "cleaned_documents", "chunks", "datasets"}
# /proc/net/tcp{,6} state 0A is LISTEN; /proc/net/udp{,6} state 07 is an unconnected (receiving) socket.
SOCKET_TABLES = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}


@dataclass(frozen=True)
class Listener:
    protocol: str
    address: str
    port: int
    pid: int
    process: str

    def __str__(self) -> str:
        return f"{self.process}[{self.pid}] {self.protocol} {self.address}:{self.port}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The full local stack on free ports in a throwaway data dir, started once for the module."""
    with pytest.MonkeyPatch.context() as env, private_stack(env, start_timeout_s=300) as stack:
        stack.up(progress=print)
        yield stack


def stack_processes(stack: Stack) -> dict[int, str]:
    """PID -> component/process name, for every process of every running component."""
    return {pid: f"{component}/{name}" for pid, (component, name, _) in stack_process_tree(stack).items()}


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def decode_address(hex_address: str) -> str:
    """/proc/net's address: IPv4 as one little-endian word, IPv6 as four of them."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    # An IPv6 socket bound to ::ffff:127.0.0.1 (as Ray's gRPC servers do) accepts only 127.0.0.1.
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped else str(address)


def is_loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    return (getattr(parsed, "ipv4_mapped", None) or parsed).is_loopback


def listeners(processes: dict[int, str]) -> list[Listener]:
    owner = {inode: pid for pid in processes for inode in socket_inodes(pid)}
    found = []
    for protocol, listening in SOCKET_TABLES.items():
        for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == listening and inode in owner:
                address, port = local.split(":")
                found.append(Listener(protocol, decode_address(address), int(port, 16), owner[inode],
                                      processes[owner[inode]]))
    return sorted(found, key=lambda item: (item.process, item.port))


def test_address_decoding() -> None:
    assert decode_address("0100007F") == "127.0.0.1"
    assert decode_address("00000000000000000000000001000000") == "::1"
    assert decode_address("00000000") == "0.0.0.0"
    assert decode_address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and is_loopback("127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("::ffff:10.0.0.1")


def test_every_listening_socket_of_the_stack_is_loopback(stack: Stack) -> None:
    processes = stack_processes(stack)
    assert len(processes) >= 8, processes
    found = listeners(processes)
    report = "\n".join(map(str, found))
    print(f"{len(found)} listening sockets of {len(processes)} stack processes:\n{report}")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "listening_sockets.txt").write_text(report + "\n")
    s = stack.settings
    ports = {item.port for item in found}
    # The check sees the servers it must see: Mongo, MLflow, Airflow's API, Ray's GCS and dashboard.
    assert {s.mongo_port, s.mlflow_port, s.airflow_port, s.ray_port, s.ray_dashboard_port} <= ports, report
    exposed = [str(item) for item in found if not is_loopback(item.address)]
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(exposed)


def _airflow_token(base: str, user: str, password: str) -> str:
    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def _wait_for_dags(base: str, token: str, timeout_s: float = 180) -> set[str]:
    """The dag-processor parses dags/ after start; wait until every DAG is listed."""
    deadline, seen = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/api/v2/dags", params={"limit": 100},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        seen = {d["dag_id"] for d in response.json().get("dags", [])} if response.status_code == 200 else set()
        if seen >= DAG_IDS:
            return seen
        time.sleep(3)
    pytest.fail(f"Airflow listed {sorted(seen)} after {timeout_s}s, missing {sorted(DAG_IDS - seen)}")


def test_airflow_ui_logged_in_lists_dags_and_asset_dependencies(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed: run scripts/install_chromium.sh (make browser)")
    base = f"http://127.0.0.1:{stack.settings.airflow_port}"
    user, password = stack.airflow_credentials()
    assert password, "the stack wrote no Airflow password"
    token = _airflow_token(base, user, password)
    _wait_for_dags(base, token)
    assets = httpx.get(f"{base}/api/v2/assets", params={"limit": 100},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["assets"]
    consumers = {a["name"]: {d["dag_id"] for d in a["scheduled_dags"]} for a in assets}
    assert consumers.get("raw_documents") == {"etl"} and consumers.get("chunks") == {"datasets"}, consumers

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/", wait_until="networkidle")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)  # the UI holds the token now

        page.goto(f"{base}/dags", wait_until="networkidle")
        for dag_id in sorted(DAG_IDS):
            page.get_by_text(dag_id, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "dags.png"))

        page.goto(f"{base}/assets", wait_until="networkidle")
        for name in sorted(ASSET_NAMES):
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "assets.png"))

        # An Asset's page draws the scheduling graph: the whole chain from the crawl to the models.
        page.get_by_role("link", name="chunks", exact=True).first.click()
        page.get_by_text("Scheduling").first.wait_for(timeout=30_000)
        page.get_by_text("models", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "asset_chunks_graph.png"))
        graph = page.inner_text("body")
        chain = ["crawl", "raw_documents", "etl", "cleaned_documents", "features", "chunks", "datasets", "training",
                 "models"]
        lines = [line.strip() for line in graph.splitlines() if line.strip()]
        assert all(name in lines for name in chain), lines[:60]

        # An Asset-scheduled DAG's page names the Asset it waits for.
        page.goto(f"{base}/dags/features", wait_until="networkidle")
        page.get_by_text("cleaned_documents").first.wait_for(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "dag_features.png"))
        browser.close()
    for name in ("dags.png", "assets.png", "asset_chunks_graph.png", "dag_features.png"):
        assert (OUTPUT / name).stat().st_size > 10_000, f"{name} looks empty"
