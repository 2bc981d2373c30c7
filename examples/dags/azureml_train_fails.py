"""Producer whose job fails on purpose (exit code 1): shows the failure route end to end."""

from airflow.sdk import Asset, dag

from bridge.provider import SubmitAzureMLJobOperator

TRAINED = Asset("azureml://bridge-demo/train/completed")
TRAINING_FAILED = Asset("azureml://bridge-demo/train/failed")


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_train_fails() -> None:
    SubmitAzureMLJobOperator(
        task_id="submit_training",
        job="../jobs/fail.yml",
        on_completed=[TRAINED],
        on_failed=[TRAINING_FAILED],
        on_canceled=[TRAINING_FAILED],
    )


azureml_train_fails()
