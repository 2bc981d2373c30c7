"""Consumer: runs when an Azure ML training job fails, is canceled, or the bridge rejects it."""

import logging
from typing import Any

from airflow.sdk import Asset, dag, task

log = logging.getLogger(__name__)

TRAINING_FAILED = Asset("azureml://bridge-demo/train/failed")


@dag(schedule=[TRAINING_FAILED], tags=["azureml", "bridge-demo"])
def azureml_training_failed() -> None:
    @task
    def report_failure(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        failures = []
        for event in triggering_asset_events.get(TRAINING_FAILED, []):
            extra = event.extra
            # Only a submission the bridge rejected has a reason; a failed job's logs are in Studio.
            reason = extra.get("reason") or f"see {extra.get('studio_url') or 'the job logs'}"
            log.error("Azure ML job %s %s: %s", extra.get("job_name"), extra.get("status"), reason)
            failures.append(
                {
                    "job_name": extra.get("job_name"),
                    "status": extra.get("status"),
                    "reason": reason,
                    "origin": extra.get("origin"),
                }
            )
        return failures

    report_failure()


azureml_training_failed()
