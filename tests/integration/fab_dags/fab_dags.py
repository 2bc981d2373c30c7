"""DAGs for the FAB role test: an asset Airflow knows, a DAG the bridge may trigger, and one not."""

from airflow.sdk import Asset, dag, task

REPORT = Asset("bridge://fab/report")


@dag(schedule=None)
def fab_assets() -> None:
    @task(outlets=[REPORT])
    def declare() -> None:
        """Never triggered: it only makes the asset known to Airflow."""

    declare()


@dag(schedule=None)
def fab_allowed() -> None:
    @task
    def noop() -> None:
        pass

    noop()


@dag(schedule=None)
def fab_forbidden() -> None:
    @task
    def noop() -> None:
        pass

    noop()


fab_assets()
fab_allowed()
fab_forbidden()
