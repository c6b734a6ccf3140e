"""`twin model canary set|status|clear` on the real registry and document store."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from tests.canary.conftest import champion_and_challenger, new_version, simulate
from twin.cli import app
from twin.models import utcnow


def twin(*args: str):
    return CliRunner().invoke(app, ["model", "canary", *args])


def test_set_status_and_clear(canary_env, canary_store, registry, author, tmp_path) -> None:
    champion, challenger = champion_and_challenger(registry, author, approve_challenger=False)
    refused = twin("set", "--author", author, "--version", new_version(registry, author, gate="failed"),
                   "--share", "0.5")
    assert refused.exit_code == 1 and "neither passed the evaluation gate" in refused.output
    assert twin("set", "--author", author, "--version", challenger, "--share", "1.5").exit_code == 2

    started = twin("set", "--author", author, "--version", challenger, "--share", "0.5", "--no-sticky", "--by", "ops")
    assert started.exit_code == 0, started.output
    assert "50% of traffic" in started.output and "approval=pending" in started.output
    config = canary_store.config(author)
    assert (config.challenger_version, config.share, config.sticky) == (challenger, 0.5, False)
    assert config.updated_by == "ops"

    start = utcnow() - timedelta(hours=3)
    simulate(canary_store, author, champion, "champion", 180, error_rate=0.0, latency_ms=200,
             thumbs_up=0.8, ratings=20, seed=7, start=start)
    simulate(canary_store, author, challenger, "challenger", 170, error_rate=0.01, latency_ms=210,
             thumbs_up=0.8, ratings=20, seed=8, start=start)
    png = tmp_path / "canary.png"
    shown = twin("status", "--author", author, "--plot", str(png))
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line.startswith("requests")}
    assert lines["requests"] == ["180", "170"]
    assert "error_noninferior=" in shown.stdout and "latency_noninferior=" in shown.stdout
    assert "feedback not compared yet: 20 and 20 ratings, 40 needed" in shown.stdout
    assert "decision now: wait: " in shown.stdout and "approved" in shown.stdout  # pending: not promoted
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    print("\n" + shown.stdout)

    as_json = json.loads(twin("status", "--author", author, "--json", "--plot", str(png)).stdout)
    assert as_json["challenger"]["requests"] == 170 and as_json["champion"]["ratings"] == 20
    assert as_json["decision"] == "wait" and as_json["share"] == 0.5

    cleared = twin("clear", "--author", author)
    assert cleared.exit_code == 0 and f"was version {challenger}" in cleared.output
    assert canary_store.config(author).share == 0
    assert "no active canary" in twin("status", "--author", author).stdout
