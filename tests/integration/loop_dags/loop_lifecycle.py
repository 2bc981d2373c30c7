"""Assets the lifecycle tests route operations to, declared by a DAG that never runs (so that no
run holds the events listing up: apache/airflow#71360), and the asset a model registered anywhere
reaches Airflow on (`azureml://<workspace>/models/<name>`)."""

from airflow.sdk import Asset, dag, task

OPERATION_DONE = Asset("azureml://bridge-tests/lifecycle/completed")
OPERATION_FAILED = Asset("azureml://bridge-tests/lifecycle/failed")
OPERATION_CANCELED = Asset("azureml://bridge-tests/lifecycle/canceled")
MODEL = Asset("azureml://local-workspace/models/loop-anywhere")


@dag(schedule=None)
def loop_lifecycle_assets() -> None:
    @task(outlets=[OPERATION_DONE, OPERATION_FAILED, OPERATION_CANCELED, MODEL])
    def declare() -> None:
        """Never triggered: it only makes the assets known to Airflow."""

    declare()


loop_lifecycle_assets()
