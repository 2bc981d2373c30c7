"""Producer: train a model on Azure ML without holding a worker slot.

The task sends the job to the bridge and succeeds in well under a second. When the job ends, the
bridge posts an event on the completion or the failure asset, and the DAGs scheduled on them run.
"""

from airflow.sdk import Asset, dag

from bridge.provider import SubmitAzureMLJobOperator

TRAINED = Asset("azureml://bridge-demo/train/completed")
TRAINING_FAILED = Asset("azureml://bridge-demo/train/failed")


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_train() -> None:
    SubmitAzureMLJobOperator(
        task_id="submit_training",
        job="../jobs/train.yml",  # next to this file's folder; Azure ML's own YAML job schema
        on_completed=[TRAINED],
        on_failed=[TRAINING_FAILED],
        on_canceled=[TRAINING_FAILED],
    )


azureml_train()
