"""`make bench`'s one table: ratios against same-run baselines, failures listed, a PNG drawn."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report, run_all


def test_table_lists_every_benchmark_with_its_ratio_or_failure(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(report, "_ROWS", [])
    report.record("crawl", "crawler", 50.0, "raw GETs", 200.0, "pages/s")
    report.record("stack", "warm start", 12.0, "cold start", 48.0, "s", higher_is_better=False)
    table = report.markdown(report.recorded(), {"crawl": 3.0, "stack": 9.0, "etl": 1.0, "quiet": 2.0},
                            {"etl": "RuntimeError('no suite')"})
    assert "| crawl | crawler | 50 pages/s | raw GETs | 200 pages/s | 0.250 ↑ |" in table
    assert "| stack | warm start | 12 s | cold start | 48 s | 0.250 ↓ |" in table
    assert "| etl | **failed**: RuntimeError('no suite')" in table
    assert "| quiet | (records no ratio" in table
    report.plot(report.recorded(), tmp_path / "latest.png")
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_all_writes_the_table_and_reports_a_broken_benchmark(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(report, "_ROWS", [])
    assert run_all.main(["no_such_benchmark", "--out", str(tmp_path)]) == 1
    written = (tmp_path / "latest.md").read_text()
    assert "| no_such_benchmark | **failed**" in written
    assert written in capsys.readouterr().out


def test_every_listed_benchmark_exists() -> None:
    folder = Path(run_all.__file__).parent
    assert all((folder / f"bench_{name}.py").is_file() for name in run_all.BENCHMARKS)
