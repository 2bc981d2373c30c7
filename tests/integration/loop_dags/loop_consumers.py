"""DAGs the loop tests route to: consumers of test assets, and a DAG the bridge triggers."""

from typing import Any

from airflow.sdk import Asset, dag, task

DONE = Asset("azureml://bridge-tests/loop/completed")
FAILED = Asset("azureml://bridge-tests/loop/failed")


@dag(schedule=[DONE])
def loop_on_completed() -> None:
    @task
    def seen(triggering_asset_events: Any = None) -> list[Any]:
        return [event.extra for event in triggering_asset_events[DONE]]

    seen()


@dag(schedule=[FAILED])
def loop_on_failed() -> None:
    @task
    def seen(triggering_asset_events: Any = None) -> list[Any]:
        return [event.extra for event in triggering_asset_events[FAILED]]

    seen()


@dag(schedule=None)
def loop_triggered() -> None:
    @task
    def conf(dag_run: Any = None) -> Any:
        return dag_run.conf

    conf()


loop_on_completed()
loop_on_failed()
loop_triggered()
