"""A submit task whose first try fails after its message was sent: Airflow retries it by itself.

The clear-versus-retry test runs it, then clears it: the retry must name the same job as the first
try, the clear a new one (docs/dags.md).
"""

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, dag

from bridge.provider.operators import SubmitAzureMLJobOperator


class SubmitThenFailFirstTry(SubmitAzureMLJobOperator):
    """Sends its submission, then fails its first try (a worker lost after the send)."""

    def execute(self, context: Any) -> str:
        name = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"lost after sending {name}")
        return name


@dag(schedule=None, default_args={"retries": 1, "retry_delay": timedelta(seconds=1)})
def loop_resubmit() -> None:
    SubmitThenFailFirstTry(
        task_id="submit",
        job={"command": "true", "environment": "azureml:env:1", "compute": "cpu-cluster",
             "experiment_name": "resubmit"},
        on_completed=[Asset("azureml://bridge-tests/loop/completed")],
    )  # fmt: skip


loop_resubmit()
