"""DAGs for the FAB role test: an asset Airflow knows, a DAG the bridge may trigger, and one not."""

from airflow.sdk import Asset, dag, task

REPORT = Asset("bridge://fab/report")


@dag(schedule=None)
def fab_assets() -> None:
    @task(outlets=[REPORT])
    def declare() -> None:
        """Never triggered: it only makes the asset known to Airflow."""

    declare()


def runnable(dag_id: str) -> None:
    @dag(dag_id=dag_id, schedule=None)
    def noop_dag() -> None:
        @task
        def noop() -> None:
            pass

        noop()

    noop_dag()


fab_assets()
runnable("fab_allowed")
runnable("fab_forbidden")
