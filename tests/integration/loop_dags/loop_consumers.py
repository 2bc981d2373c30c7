"""DAGs the loop tests route to.

The test assets are declared as outlets of a DAG that never runs, so Airflow knows them but no DAG
consumes them: Airflow 3.3.2 answers 500 to an asset-event listing while a run that one of the
listed events started is still queued (apache/airflow#71360), and the tests list these events.
"""

from typing import Any

from airflow.sdk import Asset, PartitionedAssetTimetable, dag, task

DONE = Asset("azureml://bridge-tests/loop/completed")
FAILED = Asset("azureml://bridge-tests/loop/failed")
CANCELED = Asset("azureml://bridge-tests/loop/canceled")


@dag(schedule=None)
def loop_assets() -> None:
    @task(outlets=[DONE, FAILED, CANCELED])
    def declare() -> None:
        """Never triggered: it only makes the assets known to Airflow."""

    declare()


@dag(schedule=None)
def loop_triggered() -> None:
    @task
    def conf(dag_run: Any = None) -> Any:
        return dag_run.conf

    conf()


loop_assets()
loop_triggered()


# Consumed: the coalescing test posts bursts here and reads what each run saw (never the events
# listing, which apache/airflow#71360 breaks while a run is queued).
COALESCED = Asset("azureml://bridge-tests/loop/coalesced")


@dag(schedule=[COALESCED])
def loop_coalescing_consumer() -> None:
    @task
    def seen(triggering_asset_events: Any = None) -> list[str]:
        return [str(event.extra.get("effect_id")) for event in
                (triggering_asset_events or {}).get(COALESCED, [])]  # fmt: skip

    seen()


loop_coalescing_consumer()


# Partitioned (Airflow 3.2+): a run per partition key of the asset events the bridge posts.
PARTITIONED = Asset("azureml://bridge-tests/loop/partitioned")


@dag(schedule=PartitionedAssetTimetable(assets=PARTITIONED))
def loop_partitioned_consumer() -> None:
    @task
    def key(**context: Any) -> Any:
        events = (context.get("triggering_asset_events") or {}).get(PARTITIONED, [])
        return {"partition_key": context["dag_run"].partition_key,
                "jobs": [str(event.extra.get("job_name")) for event in events]}  # fmt: skip

    key()


loop_partitioned_consumer()
