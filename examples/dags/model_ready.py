"""Consumer: runs when an Azure ML training job completes, and reads the job from the asset event.

The bridge posts the event; its `extra` names the job, its status, Studio URL and Airflow origin,
and the trace (`traceparent`) that ties this run to the one that submitted the job.
"""

import logging
from typing import Any

from airflow.sdk import Asset, dag, task

log = logging.getLogger(__name__)

TRAINED = Asset("azureml://bridge-demo/train/completed")
JOB_FIELDS = (
    "job_name",
    "status",
    "experiment",
    "studio_url",
    "workspace",
    "submission_id",
    "origin",
    "traceparent",  # the trace of the DAG run that submitted the job (see docs/security.md)
)


@dag(schedule=[TRAINED], tags=["azureml", "bridge-demo"])
def azureml_model_ready() -> None:
    @task
    def announce_model(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        jobs = []
        for event in triggering_asset_events.get(TRAINED, []):  # none when run by hand
            job = {field: event.extra.get(field) for field in JOB_FIELDS}
            trace = (job["traceparent"] or "00-?-").split("-")[1]  # the submitting run's trace
            log.info("Azure ML job %s %s: %s (trace %s)", job["job_name"], job["status"],
                     job["studio_url"], trace)  # fmt: skip
            jobs.append(job)
        return jobs

    announce_model()


azureml_model_ready()
