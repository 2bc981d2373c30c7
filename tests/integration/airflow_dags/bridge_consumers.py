"""DAGs the Airflow adapter's tests drive: a consumer of a bridge asset, producers that only
register assets, and a DAG the bridge triggers."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, dag, task

MODEL = Asset("bridge://tests/model")
# No DAG consumes these, so posting to them starts no run. The first URI is a substring of the
# second: the adapter must still pick the exact asset.
REPORTS = [Asset("bridge://tests/report"), Asset("bridge://tests/report-v2")]
# Assets whose URIs contain "bridge://tests/late", which a DAG file added later references: its
# asset gets a higher id than these twelve, so a lookup with small pages must page to find it.
LATE_SIBLINGS = [Asset(f"bridge://tests/late/part-{n:02d}") for n in range(12)]


@dag(dag_id="bridge_model_consumer", schedule=[MODEL], catchup=False)
def bridge_model_consumer() -> None:
    @task
    def read_extra(**context: Any) -> list[dict[str, Any]]:
        events = context["triggering_asset_events"][MODEL]
        return [dict(event.extra) for event in events]

    read_extra()


@dag(dag_id="bridge_asset_producer", schedule=None, catchup=False)
def bridge_asset_producer() -> None:
    @task(outlets=[*REPORTS, *LATE_SIBLINGS])
    def produce() -> None:
        pass

    produce()


@dag(dag_id="bridge_triggered", schedule=None, catchup=False)
def bridge_triggered() -> None:
    @task
    def read_conf(**context: Any) -> dict[str, Any]:
        return dict(context["dag_run"].conf or {})

    read_conf()


bridge_model_consumer()
bridge_asset_producer()
bridge_triggered()
