"""Producer: a pipeline job from a YAML file, whose completion starts an evaluation DAG with conf.

`trigger` starts a DAG run per outcome, with a deterministic run id (`azureml__<job>__completed`),
so a redelivered event never starts a second one. Its `conf` is templated here, when the task
runs, and arrives with the job's details under `conf["azureml"]`.
"""

from airflow.sdk import dag

from bridge.provider import SubmitAzureMLJobOperator


@dag(schedule=None, tags=["azureml", "bridge-demo"])
def azureml_pipeline() -> None:
    SubmitAzureMLJobOperator(
        task_id="submit_pipeline",
        job="../jobs/pipeline.yml",
        trigger={
            "completed": [
                {
                    "dag_id": "azureml_evaluate",
                    "conf": {"threshold": 0.8, "requested_by": "{{ run_id }}"},
                }
            ],
        },
    )


azureml_pipeline()
