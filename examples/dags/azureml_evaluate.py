"""Triggered by the bridge when a pipeline completes: reads its own conf and the job's details."""

import logging
from typing import Any

from airflow.sdk import dag, task

log = logging.getLogger(__name__)


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_evaluate() -> None:
    @task
    def evaluate(dag_run: Any = None) -> dict[str, Any]:
        conf = dict(dag_run.conf or {})
        job = conf.get("azureml", {})  # what an asset event's extra holds, for a triggered run
        log.info(
            "evaluating Azure ML job %s (%s) against threshold %s, requested by %s",
            job.get("job_name"),
            job.get("status"),
            conf.get("threshold"),
            conf.get("requested_by"),
        )
        return {
            "job_name": job.get("job_name"),
            "status": job.get("status"),
            "threshold": conf.get("threshold"),
            "requested_by": conf.get("requested_by"),
        }

    evaluate()


azureml_evaluate()
