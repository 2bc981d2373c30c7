"""The audit trail on the real local stack: one trace id from the DAG run that submitted a job to
the DAG runs its outcome started, every call and decision kept, and no secret in any record."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.adapters.airflow import AirflowRest
from bridge.audit import JsonFormatter, TraceContext
from bridge.composition import build
from bridge.contracts import TAG_TRACEPARENT, JobOutput, Outcome, Submission
from bridge.errors import BridgeError
from bridge.local.credential import LocalCredential
from bridge.local.stack import Stack
from bridge.reconcile import Reconciler
from bridge.service import Finding, Result
from tests.integration.conftest import (
    eventually,
    job_events,
    job_tags,
    own_ledger,
    run_bridge,
    send,
)

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/loop/completed"
FAILED = "azureml://bridge-tests/loop/failed"


def submission(traceparent: str | None, command: str = "echo done") -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "audit_tests", "run_id": secrets.token_hex(6), "task_id": "t"},
            "job": {"command": command, "environment": "azureml:env:1", "compute": "cpu-cluster",
                    "experiment_name": "audit"},
            "on": {"completed": [DONE], "failed": [FAILED]},
            "trigger": {"completed": [{"dag_id": "loop_triggered", "conf": {"from": "audit"}}]},
            "traceparent": traceparent,
        }
    )  # fmt: skip


def trail_until(stack: Stack, job: str, decision: str) -> list[dict[str, Any]]:
    return eventually(
        lambda: (
            (found := stack.bridge.ledger.trail(job))
            and any(entry.get("decision") == decision for entry in found)
            and found
        ),
        timeout=60,
        what=f"a {decision} record for {job}",
    )


def test_one_trace_from_the_dag_run_to_the_downstream_run(loop_stack: Stack) -> None:
    """The example producer DAG submits; the example consumer DAG reads the same trace id."""
    airflow = loop_stack.airflow
    assert airflow is not None
    run_id = airflow.trigger("azureml_train")
    assert airflow.wait_for_run("azureml_train", run_id, timeout=60) == "success"
    job = airflow.xcom("azureml_train", run_id, "submit_training")
    sent = TraceContext.parse(
        airflow.xcom("azureml_train", run_id, "submit_training", "traceparent")
    )
    assert sent is not None, "the operator put no traceparent on its submission"

    # The downstream run (scheduled on the asset) finds the trace in the event's extra.
    def consumed() -> dict[str, Any] | None:
        for run in reversed(airflow.runs("azureml_model_ready")):
            if run.state.value != "success":
                continue
            seen = airflow.xcom("azureml_model_ready", run.dag_run_id, "announce_model") or []
            mine = [entry for entry in seen if entry.get("job_name") == job]
            if mine:
                return dict(mine[0])
        return None

    downstream = eventually(consumed, timeout=120, what=f"azureml_model_ready run for {job}")
    routed = TraceContext.parse(downstream["traceparent"])
    assert routed is not None and routed.trace_id == sent.trace_id
    # The same event tells the consumer where the job's model output is (documented profile).
    assert downstream["outputs"]["model"] == {
        "type": "uri_folder",
        "uri": f"azureml://datastores/workspaceblobstore/paths/azureml/{job}/model/",
    }

    # The job carries the bridge's span as a tag, in the same trace.
    tagged = TraceContext.parse(job_tags(loop_stack, job)[TAG_TRACEPARENT])
    assert tagged is not None and tagged.trace_id == sent.trace_id

    records = trail_until(loop_stack, job, "effect-performed")
    assert {entry["trace_id"] for entry in records} == {sent.trace_id}
    decisions = [entry["decision"] for entry in records if entry["record"] == "decision"]
    # The outputs cost one audited read of the job, in the event's span.
    assert any(e.get("operation") == "jobs.get" and e["span"] == "event" for e in records)
    for expected in ("accepted", "created", "event-received", "effect-performed"):
        assert expected in decisions, decisions
    assert (
        decisions.index("accepted") < decisions.index("created") < decisions.index("event-received")
    )
    calls = {(e["system"], e["operation"]): e for e in records if e["record"] == "call"}
    create = calls["azureml", "jobs.create_or_update"]
    assert create["status"] in (200, 201) and create["identity"] == "local emulator token"
    assert any(request.startswith("PUT ") for request in create["requests"])
    posted = calls["airflow", "create_asset_event"]
    assert posted["status"] == 200 and posted["target"] == "azureml://bridge-demo/train/completed"
    assert posted["identity"] == f"user {loop_stack.settings.airflow_username}"
    assert all(entry["latency_ms"] >= 0 for entry in calls.values())
    # Two spans: the submission's and the event's, the event's a child in the same trace.
    spans = {(entry["span"], entry["span_id"]) for entry in records}
    assert {name for name, _ in spans} >= {"submit", "event"}

    shown = run_bridge(loop_stack.settings, "show", job)
    assert shown.returncode == 0, shown.stderr
    assert f"trail (trace {sent.trace_id})" in shown.stdout
    assert "azureml jobs.create_or_update" in shown.stdout
    assert "airflow create_asset_event" in shown.stdout and "effect-performed" in shown.stdout


def test_a_triggered_dag_run_finds_the_trace_in_its_conf(loop_stack: Stack) -> None:
    sent = TraceContext.new()
    job = submission(sent.traceparent)
    send(loop_stack, job)
    airflow = loop_stack.airflow
    assert airflow is not None
    run_id = f"azureml__{job.id}__completed"
    eventually(lambda: run_id in {r.dag_run_id for r in airflow.runs("loop_triggered")},
               timeout=60, what=f"loop_triggered run {run_id}")  # fmt: skip
    assert airflow.wait_for_run("loop_triggered", run_id, timeout=60) == "success"
    conf = airflow.xcom("loop_triggered", run_id, "conf")
    routed = TraceContext.parse(conf["azureml"]["traceparent"])
    assert routed is not None and routed.trace_id == sent.trace_id
    assert conf["from"] == "audit"


def test_reconciliation_continues_the_trace_of_the_submission(loop_stack: Stack) -> None:
    """An outcome found by the sweep, not by an event, is in the same trace: a ledger of its own,
    which the stack's event path does not know, so only the sweep can find the outcome."""
    bridge = build(own_ledger(loop_stack, "audit", reconcile_after_seconds=0.1))
    sent = TraceContext.new()
    job = submission(sent.traceparent)
    assert bridge.submit(job.to_json().encode(), job.id).result is Result.CREATED
    loop_stack.emulator.wait_for_status(job.id, ["Completed"], timeout=30)
    # Due 0.1 s after acceptance: a fast job may complete before that, so sweep until it is.
    swept_jobs = eventually(lambda: Reconciler(bridge).sweep().jobs, timeout=10, what="a sweep")
    assert swept_jobs == {job.id: "concluded"}
    records = bridge.ledger.trail(job.id)
    assert {entry["trace_id"] for entry in records} == {sent.trace_id}
    swept = [entry for entry in records if entry["span"] == "reconcile"]
    assert [e["decision"] for e in swept if e["record"] == "decision"] == [
        "effect-performed", "effect-performed", "reconciled",
    ]  # fmt: skip  # the asset event, the DAG run, and the sweep's own finding
    assert any(e.get("operation") == "jobs.get" and e["status"] == 200 for e in swept)


@pytest.fixture
def every_record() -> Iterator[list[str]]:
    """Every log record of every logger, at DEBUG, formatted both as JSON and as plain text with
    its traceback: what a log sink would hold."""
    lines: list[str] = []
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))
            lines.append(plain.format(record))

    root = logging.getLogger()
    handler = Keep(level=logging.DEBUG)
    noisy = ["azure", "urllib3", "airflow_client", "bridge"]
    levels = {name: logging.getLogger(name).level for name in noisy}
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in noisy:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_no_configured_secret_appears_in_any_log_record_or_error(
    loop_stack: Stack, every_record: list[str]
) -> None:
    settings = dataclasses.replace(
        own_ledger(loop_stack, "secrets"), signing_key_previous=secrets.token_urlsafe(32)
    )
    bridge = build(settings)
    errors: list[str] = []

    # The whole path: a job submitted, its event handled, an asset event and a DAG run posted.
    job = submission(TraceContext.new().traceparent)
    bridge.submit(job.to_json().encode(), job.id)
    loop_stack.emulator.wait_for_status(job.id, ["Completed"], timeout=30)
    record = bridge.ledger.get_job(job.id)
    assert record is not None
    assert bridge.conclude(record, Finding(Outcome.COMPLETED, "Completed", via="event")).performed
    # A refused submission, and a message that is none.
    refused = submission(None)
    bridge.submit(refused.to_json().encode().replace(b"cpu-cluster", b"gpu-monster"), "refused")
    bridge.submit(b"{not json", "garbage")
    # Airflow refusing a wrong password: the error names the user, never the password.
    wrong = secrets.token_urlsafe(16)
    try:
        AirflowRest(settings.airflow_url, settings.airflow_username, wrong).post_asset_event(
            DONE, {}
        )
    except BridgeError as exc:
        errors.append(f"{exc!r} {exc}")
    airflow = bridge.airflow
    assert isinstance(airflow, AirflowRest) and airflow.access_token

    configured = {
        "Airflow password": settings.airflow_password,
        "wrong Airflow password": wrong,
        "signing key": settings.signing_key,
        "previous signing key": settings.signing_key_previous or "",
        "Airflow access token": airflow.access_token,
        # Every local token starts so: the unsigned JWT's header, in no record unless one leaked.
        "Azure token": LocalCredential()
        .get_token("https://ml.azure.com/.default")
        .token.split(".")[0],
    }
    assert errors and every_record, "nothing was logged or raised: the check proves nothing"
    assert any("audit" in line for line in every_record)
    for name, value in configured.items():
        assert len(value) >= 16, name
        leaks = [line for line in every_record + errors if value in line]
        assert not leaks, f"{name} appears in {len(leaks)} record(s): {leaks[0][:300]}"


def test_reconciliation_shares_its_read_of_the_job_with_the_outputs(loop_stack: Stack) -> None:
    """Found by the sweep, a completed job's outputs come from the sweep's own read: one
    `jobs.get` in the reconcile span, none more for the outputs."""
    bridge = build(own_ledger(loop_stack, "outputs", reconcile_after_seconds=0.1))
    job = submission(TraceContext.new().traceparent, command="echo m > ${{outputs.model}}/m.txt")
    job = job.model_copy(update={"job": job.job.model_copy(  # type: ignore[union-attr]
        update={"outputs": {"model": JobOutput(type="uri_folder")}})})  # fmt: skip
    assert bridge.submit(job.to_json().encode(), job.id).result is Result.CREATED
    loop_stack.emulator.wait_for_status(job.id, ["Completed"], timeout=30)
    # Due 0.1 s after acceptance: a fast job may complete before that, so sweep until it is.
    swept_jobs = eventually(lambda: Reconciler(bridge).sweep().jobs, timeout=10, what="a sweep")
    assert swept_jobs == {job.id: "concluded"}
    swept = [e for e in bridge.ledger.trail(job.id) if e["span"] == "reconcile"]
    assert [e["operation"] for e in swept if e["record"] == "call" and e["system"] == "azureml"] \
        == ["jobs.get"]  # fmt: skip
    [routed] = job_events(loop_stack, DONE, job.id)
    assert routed.extra["via"] == "reconcile"
    assert routed.extra["outputs"]["model"]["uri"].endswith(f"/azureml/{job.id}/model/")
