"""Partitioned assets (Airflow 3.2+): a submission's `partition_key` reaches `POST /assets/events`,
and a consumer on a `PartitionedAssetTimetable` runs once per key, for the right key."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from bridge.contracts import Submission
from bridge.local.stack import Stack
from tests.integration.conftest import eventually, send

pytestmark = pytest.mark.integration

PARTITIONED = "azureml://bridge-tests/loop/partitioned"
CONSUMER = "loop_partitioned_consumer"


def submission(partition_key: str) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "partitions", "run_id": secrets.token_hex(6), "task_id": "t"},
            "job": {"command": "echo done", "environment": "azureml:env:1",
                    "compute": "cpu-cluster", "experiment_name": "partitions"},
            "on": {"completed": [PARTITIONED]},
            "partition_key": partition_key,
        }
    )  # fmt: skip


def test_each_job_reaches_the_consumer_run_of_its_own_partition(loop_stack: Stack) -> None:
    airflow = loop_stack.airflow
    assert airflow is not None
    keys = [f"2026-11-{day}-{secrets.token_hex(2)}" for day in (26, 27)]
    jobs = {key: submission(key) for key in keys}
    send(loop_stack, *jobs.values())

    def runs_by_key() -> dict[str, Any] | None:
        runs = {r.partition_key: r for r in airflow.runs(CONSUMER) if r.partition_key in keys}
        return runs if len(runs) == len(keys) else None

    runs = eventually(runs_by_key, timeout=90, what="a consumer run per partition key")
    for key, job in jobs.items():
        run = runs[key]
        assert airflow.wait_for_run(CONSUMER, run.dag_run_id, timeout=60) == "success"
        seen = airflow.xcom(CONSUMER, run.dag_run_id, "key")
        assert seen == {"partition_key": key, "jobs": [job.id]}
