"""Every example DAG of docs/dags.md runs on the real local stack, end to end.

One job (`azureml_train` → `azureml_model_ready`) and the failure route (`azureml_train_fails` →
`azureml_training_failed`) are run by test_loop.py and test_audit.py; the rest run here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bridge.ledger import EffectState
from bridge.local.stack import Stack
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


def test_mapped_jobs_each_post_their_own_asset_event(loop_stack: Stack) -> None:
    """One job and one asset event per map index. Airflow 3.3.2 starts a consumer run for the
    first and leaves events that land together waiting for the next one (test_coalescing.py), so
    the consumer is checked to have run on one of them, and the bridge's ledger for all three."""
    airflow = loop_stack.airflow
    assert airflow is not None
    airflow.wait_for_dags(["azureml_mapped", "azureml_mapped_ready"], timeout=90)
    before = {run.dag_run_id for run in airflow.runs("azureml_mapped_ready")}
    run_id = airflow.trigger("azureml_mapped")
    assert airflow.wait_for_run("azureml_mapped", run_id, timeout=90) == "success"
    names = [str(airflow.xcom("azureml_mapped", run_id, "train", "return_value", map_index=i))
             for i in range(3)]  # fmt: skip
    assert len(set(names)) == 3  # one job per map index

    def posted() -> list[str] | None:
        done = [
            name for name in names
            if any(e.kind == "asset" and e.state is EffectState.COMPLETED
                   for e in loop_stack.bridge.ledger.effects(name))
        ]  # fmt: skip
        return done if len(done) == 3 else None

    eventually(posted, timeout=120, what="an asset event per mapped job")
    records = [loop_stack.bridge.ledger.get_job(name) for name in names]
    assert [r.submission.origin.map_index for r in records if r] == [0, 1, 2]

    def consumed() -> list[dict[str, Any]] | None:
        for run in airflow.runs("azureml_mapped_ready"):
            if run.dag_run_id in before or run.state.value != "success":
                continue
            seen = airflow.xcom("azureml_mapped_ready", run.dag_run_id, "collect") or []
            if any(entry["job_name"] in names for entry in seen):
                return list(seen)
        return None

    seen = eventually(consumed, timeout=90, what="an azureml_mapped_ready run on these jobs")
    assert all(names[entry["map_index"]] == entry["job_name"] for entry in seen
               if entry["job_name"] in names)  # fmt: skip


def test_a_pipeline_from_yaml_starts_its_evaluation_with_conf(loop_stack: Stack) -> None:
    airflow = loop_stack.airflow
    assert airflow is not None
    airflow.wait_for_dags(["azureml_pipeline", "azureml_evaluate"], timeout=90)
    run_id = airflow.trigger("azureml_pipeline")
    assert airflow.wait_for_run("azureml_pipeline", run_id, timeout=90) == "success"
    job = str(airflow.xcom("azureml_pipeline", run_id, "submit_pipeline"))
    evaluation = f"azureml__{job}__completed"
    eventually(lambda: evaluation in {r.dag_run_id for r in airflow.runs("azureml_evaluate")},
               timeout=90, what=f"azureml_evaluate run {evaluation}")  # fmt: skip
    assert airflow.wait_for_run("azureml_evaluate", evaluation, timeout=60) == "success"
    seen: dict[str, Any] = airflow.xcom("azureml_evaluate", evaluation, "evaluate")
    assert seen == {"job_name": job, "status": "Completed", "threshold": 0.8,
                    "requested_by": run_id}  # fmt: skip
