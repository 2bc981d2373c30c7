"""Run one DAG with `dag.test()` inside the Airflow venv; print what the test checks as JSON.

Usage: `.venv-airflow/bin/python operator_runner.py DAG_PATH DAG_ID [DAG_ID ...]`, with
AIRFLOW_HOME (migrated) and AIRFLOW__CORE__DAGS_FOLDER set by the caller; DAG_PATH is a DAG file
or folder. For each DAG, stdout gets `BEGIN <dag_id>`, the task logs as `dag.test()` prints them,
then `RESULT {json}`: the run's state, each task instance's state, try number and duration, and
every XCom the run pushed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

BEGIN_PREFIX = "BEGIN "
RESULT_PREFIX = "RESULT "


def run(bag: Any, dag_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    if bag.import_errors:
        return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}}
    dag = bag.get_dag(dag_id)
    if dag is None:
        return {"import_errors": {dag_id: "no such DAG"}}
    started = time.monotonic()
    dag_run = dag.test()
    elapsed = time.monotonic() - started
    with create_session() as session:
        task_instances = dag_run.get_task_instances(session=session)
        xcoms = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_id)).all()
        return {
            "run_id": dag_run.run_id,
            "state": str(dag_run.state),
            "dag_test_seconds": elapsed,
            "tasks": {
                label(ti.task_id, ti.map_index): {
                    "state": str(ti.state),
                    "duration": ti.duration,
                    "try_number": ti.try_number,
                    "map_index": ti.map_index,
                }
                for ti in task_instances
            },
            "xcom": {
                f"{label(x.task_id, x.map_index)}:{x.key}": XComModel.deserialize_value(x)
                for x in xcoms
            },
        }


def label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def main() -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_path, *dag_ids = sys.argv[1:]
    bag = DagBag(dag_path)
    for dag_id in dag_ids:
        print(BEGIN_PREFIX + dag_id, flush=True)
        result = run(bag, dag_id)
        sys.stdout.flush()
        print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
