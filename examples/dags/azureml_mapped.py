"""Producer: one Azure ML job per learning rate, with dynamic task mapping.

Each map index is its own task instance, so its own job (the job name includes the map index) and
its own asset event; `extra.origin.map_index` says which. The consumer below may see several of
them in one run: Airflow coalesces asset events that arrive before its run starts.
"""

from typing import Any

from airflow.sdk import Asset, dag, task

from bridge.provider import SubmitAzureMLJobOperator

SWEPT = Asset("azureml://bridge-demo/mapped/completed")
RATES = (0.01, 0.05, 0.1)


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_mapped() -> None:
    SubmitAzureMLJobOperator.partial(task_id="train", on_completed=[SWEPT]).expand(
        # Mappings in Azure ML's YAML job schema: what Airflow stores for a mapped argument.
        job=[
            {
                "type": "command",
                "command": f"echo training with learning rate {rate}",
                "environment": "azureml:bridge-demo-env:1",
                "compute": "cpu-cluster",
                "experiment_name": "bridge-demo",
            }
            for rate in RATES
        ]
    )


@dag(schedule=[SWEPT], tags=["azureml", "bridge-demo"])
def azureml_mapped_ready() -> None:
    @task
    def collect(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return [
            {"job_name": event.extra["job_name"], "map_index": event.extra["origin"]["map_index"]}
            for event in triggering_asset_events.get(SWEPT, [])
        ]

    collect()


azureml_mapped()
azureml_mapped_ready()
