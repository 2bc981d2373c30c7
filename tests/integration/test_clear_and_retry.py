"""Clearing a submit task runs the job again; Airflow's automatic retry does not.

Against the loop stack's real Airflow 3.3.2 (scheduler, LocalExecutor) and its dev host: the
task's first try sends its submission and then fails, Airflow retries it, and the retry sends the
same submission (answered as a duplicate). Then a person clears the task: a new job.
"""

from __future__ import annotations

import pytest

from bridge.composition import build
from bridge.ledger import JobRecord, Ledger, now_iso
from bridge.local.stack import Stack
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

DAG = "loop_resubmit"


def jobs_of(ledger: Ledger, run_id: str, since: str) -> list[JobRecord]:
    return [record for record in ledger.jobs(since=since, limit=1000)
            if (record.submission.origin.dag_id, record.submission.origin.run_id)
            == (DAG, run_id)]  # fmt: skip


def test_a_retry_names_the_same_job_and_a_clear_names_a_new_one(loop_stack: Stack) -> None:
    airflow = loop_stack.airflow
    assert airflow is not None
    airflow.wait_for_dags([DAG], timeout=90)
    ledger = build(loop_stack.settings).ledger  # the dev host's, which the queue feeds
    since = now_iso()

    run_id = airflow.trigger(DAG)
    assert airflow.wait_for_run(DAG, run_id, timeout=120) == "success"

    assert airflow.try_number(DAG, run_id, "submit") == 2  # the first try failed after sending
    [first] = eventually(lambda: jobs_of(ledger, run_id, since), timeout=30, what="the job")
    assert first.submission.origin.cleared == 0
    sent = [r for r in loop_stack.emulator.requests
            if r.method == "PUT" and r.path.endswith(f"/jobs/{first.name}")]  # fmt: skip
    assert len(sent) == 1  # the retry's resend was a duplicate: no second job

    airflow.clear(DAG, run_id, ["submit"])
    jobs = eventually(lambda: (found := jobs_of(ledger, run_id, since)) and len(found) == 2
                      and found, timeout=120, what="a second job after the clear")  # fmt: skip

    assert airflow.wait_for_run(DAG, run_id, timeout=120) == "success"
    second = next(record for record in jobs if record.name != first.name)
    assert second.submission.origin.cleared == 2  # cleared at try 2: max_tries - retries
    assert airflow.try_number(DAG, run_id, "submit") == 3  # ran once more, and did not fail
