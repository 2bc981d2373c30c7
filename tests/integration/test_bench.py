"""`make bench QUICK=1` as a newcomer runs it: every benchmark scaled down on a fresh local stack.

Nothing here is timed (the speed goals live in the benchmarks' own output, against baselines of
the same run); what is checked is that each benchmark runs, prints its table and writes a result
that holds what docs/benchmarks.md reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.local.process import child_environment

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TITLES = (
    "1. Job end → consumer DAG run",
    "2. Bridge overhead",
    "2b. Bridge CPU per effect",
    "3. Throughput",
    "ledger through Azure Table's latency model",
    "12. The bridge's own ceiling",
    "4. Per job",
    "5. Cost per 1,000 jobs",
    "3f. The floor",
    "6. Cold start",
    "7. Memory",
    "10. Deploying a model, measured",
    "11. Deploying a model of 5, 10 and 20 minutes",
)


def test_quick_benchmarks_print_every_table_and_write_every_result(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        env=child_environment(),  # earlier tests' MLClient may have marked this process
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for title in TITLES:
        assert title in done.stdout, f"no table {title!r} in:\n{done.stdout}"
    assert "experimental class" not in done.stderr + done.stdout  # azure-ai-ml kept quiet
    results = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.quick.json")}
    assert set(results) == {
        f"{name}.quick.json"
        for name in (
            "push_vs_poll",
            "overhead",
            "throughput",
            "throughput_modelled",
            "throughput_remote",
            "throughput_remote_modelled",
            "ceiling",
            "calls",
            "cold_start",
            "memory",
            "deployments",
        )
    }
    push = results["push_vs_poll.quick.json"]["peers"]
    assert set(push) == {"push", "stream", "poll10", "poll5", "watcher"}
    assert all(len(peer["created_s"]) == 6 for peer in push.values())  # every consumer ran
    assert results["overhead.quick.json"]["phases"]["total"]["n"] == 150
    assert results["overhead.quick.json"]["ledger_round_trips"] == 3.0  # read, claim, conclude
    assert results["overhead.quick.json"]["cpu_ms"]["total"] > 0
    for name in ("throughput", "throughput_modelled"):
        levels = results[f"{name}.quick.json"]["levels"]
        assert [row["concurrency"] for row in levels] == [1, 4, 16]
        assert all(row["bridge_cpu_ms_per_effect"] > 0 for row in levels)
        assert all(row["latency_bound"] > 0 and row["raw_ms"] > 0 for row in levels)
    assert results["throughput_modelled.quick.json"]["storage_model"]["write"]["p50_ms"] == 10.0
    # The floor runs where the model does, and only there; the idle CPU is read at every level.
    for name in ("throughput_modelled", "throughput_remote_modelled"):
        for row in results[f"{name}.quick.json"]["levels"]:
            assert row["floor_claim_only_per_s"] > 0 and row["floor_claim_settle_per_s"] > 0
    assert all("floor_claim_only_per_s" not in row
               for row in results["throughput.quick.json"]["levels"])  # fmt: skip
    assert all(row["bridge_idle_cpu_ms_per_s"] >= 0
               for row in results["throughput.quick.json"]["levels"])  # fmt: skip
    assert {row["processes"] for row in results["ceiling.quick.json"]["levels"]} == {1, 2}
    bills = results["calls.quick.json"]["cost_per_1000_jobs"]
    assert set(bills) == {"1 minute", "1 hour", "8 hours"}
    assert len(results["memory.quick.json"]["rss_mib"]) == 3
    deployed = results["deployments.quick.json"]
    # Each way deployed for real: the provider's writes blocked, the bridge's were routed by the
    # ARM events, and by the sweep alone when none came (its four checks, one finding it running).
    assert deployed["measurements"]["bridge_via"] == ["event"]
    assert deployed["measurements"]["sweep_via"] == "reconcile"
    assert [check["check"] for check in deployed["sweep_checks"]] == [
        "endpoint advanced", "deployment running", "deployment advanced", "traffic concluded",
    ]  # fmt: skip
    durations = {row["deployment"] for row in deployed["rows"]}
    assert durations == {"5 minutes", "10 minutes", "20 minutes"}


def test_quick_ledger_benchmark_prints_both_tables_and_writes_both_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.ledger", "--quick", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env=child_environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for title in ("8. bridge jobs over 10,000 rows", "9. One reconcile sweep"):
        assert title in done.stdout, f"no table {title!r} in:\n{done.stdout}"
    listing = json.loads((tmp_path / "ledger_listing.quick.json").read_text())
    assert (listing["jobs"], listing["blocked"]) == (1000, 10)
    returned = {name: case["jobs_returned"] for name, case in listing["cases"].items()}
    assert returned["jobs(limit=50)"] == 50
    assert returned["jobs(blocked=True)"] == 10
    sweep = json.loads((tmp_path / "ledger_sweep.quick.json").read_text())
    assert [run["concurrency"] for run in sweep["runs"]] == [1, 8]
    for run in sweep["runs"]:  # every due job read once; none posted anything to Airflow
        assert (run["checked"], run["azureml_gets"]) == (100, 100)
        assert run["actions"] == {"concluded": 50, "running": 50}
