"""`bridge jobs` and `bridge show` against the local stack: what an operator reads in a terminal
and as JSON. Each test has a ledger table of its own, and runs the real command line."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from bridge.composition import build
from bridge.contracts import Outcome, Submission
from bridge.local.stack import Stack
from bridge.service import Bridge, Finding, Result
from bridge.settings import Settings
from tests.integration.conftest import own_ledger, run_bridge

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"
UNKNOWN = "azureml://bridge-tests/nobody-declares-this"


@pytest.fixture
def settings(loop_stack: Stack) -> Settings:
    return own_ledger(loop_stack, "inspect")


@pytest.fixture
def bridge(settings: Settings) -> Bridge:
    bridge = build(settings)
    # An asset no DAG declares blocks; with no time to heal it fails for good at once.
    bridge.blocked_give_up = 0.0
    return bridge


def submission(name: str, command: str = "echo done", compute: str = "cpu-cluster") -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": f"inspect_{name}", "run_id": secrets.token_hex(6),
                       "task_id": "submit", "map_index": 2},
            "job": {"command": command, "environment": "azureml:env:1", "compute": compute,
                    "experiment_name": "inspection"},
            "on": {"completed": [DONE, UNKNOWN], "failed": [FAILED]},
        }
    )  # fmt: skip


def bridge_cli(settings: Settings, *args: str) -> str:
    done = run_bridge(settings, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def three_jobs(stack: Stack, bridge: Bridge) -> dict[str, Submission]:
    jobs = {"finished": submission("finished"), "open": submission("open", command="sleep 300"),
            "refused": submission("refused", compute="gpu-monster")}  # fmt: skip
    for job in jobs.values():
        bridge.submit(job.to_json().encode(), job.id)
    stack.emulator.wait_for_status(jobs["finished"].id, ["Completed"], timeout=20)
    record = bridge.ledger.get_job(jobs["finished"].id)
    assert record is not None
    finding = Finding(Outcome.COMPLETED, "Completed", via="event", event_id="evt-42")
    assert bridge.conclude(record, finding).result is Result.HANDLED
    return jobs


def test_jobs_lists_state_origin_and_what_is_done_and_pending(
    loop_stack: Stack, bridge: Bridge, settings: Settings
) -> None:
    jobs = three_jobs(loop_stack, bridge)

    listed: list[dict[str, Any]] = json.loads(bridge_cli(settings, "jobs", "--json"))

    by_name = {line["name"]: line for line in listed}
    assert set(by_name) == {job.id for job in jobs.values()}
    finished, still_open, refused = (by_name[jobs[k].id] for k in ("finished", "open", "refused"))
    assert (finished["state"], finished["done"], finished["pending"]) == (
        "completed", [DONE], [],
    )  # fmt: skip  # the unknown asset failed for good: settled, not pending
    assert (still_open["state"], still_open["done"], still_open["pending"]) == ("created", [], [])
    assert (refused["state"], refused["done"]) == ("rejected", [FAILED])
    assert (finished["dag_id"], finished["task_id"], finished["map_index"]) == (
        "inspect_finished", "submit", 2,
    )  # fmt: skip
    assert all(line["age_seconds"] >= 0 for line in listed)

    only_open = json.loads(bridge_cli(settings, "jobs", "--json", "--state", "created"))
    assert [line["name"] for line in only_open] == [jobs["open"].id]
    table = bridge_cli(settings, "jobs")
    assert table.splitlines()[0].split() == ["JOB", "STATE", "AGE", "DAG", "/", "RUN", "DONE",
                                             "PENDING", "WAITING", "ON"]  # fmt: skip
    assert jobs["open"].id in table and "created" in table


def test_show_prints_the_whole_trail_of_one_job(
    loop_stack: Stack, bridge: Bridge, settings: Settings
) -> None:
    jobs = three_jobs(loop_stack, bridge)
    name = jobs["finished"].id

    shown = json.loads(bridge_cli(settings, "show", name, "--json"))

    assert shown["job"]["state"] == "completed" and shown["found_by"] == "event"
    assert shown["azureml_status"] == "Completed" and shown["studio_url"]
    effects = {e["target"]: e for e in shown["effects"]}
    assert (effects[DONE]["state"], effects[DONE]["event_id"]) == ("completed", "evt-42")
    assert effects[UNKNOWN]["state"] == "failed"
    assert "no DAG references the asset URI" in effects[UNKNOWN]["reason"]
    assert shown["routes"]["on"]["completed"] == [DONE, UNKNOWN]
    assert shown["watch"] is None  # routed: off the reconcile watch list

    text = bridge_cli(settings, "show", name)
    assert f"job           {name}" in text and "found by event" in text
    assert "Azure ML now  Completed" in text and "evt-42" in text
    assert f"routes        completed -> {DONE}, {UNKNOWN}; failed -> {FAILED}" in text

    open_job = json.loads(bridge_cli(settings, "show", jobs["open"].id, "--json", "--offline"))
    assert open_job["watch"]["checks"] == 0 and open_job["azureml_status"] is None
    refused = json.loads(bridge_cli(settings, "show", jobs["refused"].id, "--json"))
    assert "compute 'gpu-monster' is not allowed" in refused["reason"]
    assert [e["state"] for e in refused["effects"]] == ["completed"]
