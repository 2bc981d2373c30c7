"""Producer: a long training job. If it fails or someone cancels it in Azure ML Studio, the DAG
scheduled on the failure asset hears of it, whether or not Azure ML raises an event for it: the
bridge's reconcile sweep finds an outcome that no event told."""

from airflow.sdk import Asset, dag

from bridge.provider import SubmitAzureMLJobOperator

TRAINED = Asset("azureml://bridge-demo/train/completed")
TRAINING_FAILED = Asset("azureml://bridge-demo/train/failed")


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_train_long() -> None:
    SubmitAzureMLJobOperator(
        task_id="submit_training",
        job="../jobs/train_long.yml",
        on_completed=[TRAINED],
        on_failed=[TRAINING_FAILED],
        on_canceled=[TRAINING_FAILED],
    )


azureml_train_long()
