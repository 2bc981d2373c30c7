"""Consumer: runs when an Azure ML training job completes, and reads the job from the asset event.

The bridge posts the event; its `extra` names the job, its status, Studio URL and Airflow origin,
the trace (`traceparent`) that ties this run to the one that submitted the job, and where Azure ML
put the job's named outputs (`outputs`).
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
    "outputs",  # where Azure ML put the job's named outputs: {"model": {"type", "uri"}}
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
            # The model's location, as Azure ML reports it: no call to Azure ML from here. Azure
            # ML may leave a declared output's uri empty (docs/azure-behaviour.md).
            model = (job["outputs"] or {}).get("model") or {}
            where = model.get("uri") or "(not reported)"
            log.info("model output of %s: %s", job["job_name"], where)
            jobs.append(job)
        return jobs

    announce_model()


azureml_model_ready()
