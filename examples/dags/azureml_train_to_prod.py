"""A model from training to production, in thin DAGs: every arrow is an asset event.

    azureml_train_to_prod            train (a job with an output named `model`)
      → azureml_lifecycle_register   register the model from the job's output
      → azureml_lifecycle_stage      deploy it to the staging deployment `green`, at 0 % traffic
      → azureml_lifecycle_smoke_test check the deployment serves the model just registered
      → azureml_lifecycle_promote    shift the endpoint's traffic to `green`
      → azureml_lifecycle_share      (once live) share the model to the registry
      → azureml_lifecycle_production deploy it in the production workspace (another connection)
      → azureml_lifecycle_in_production  announce where it serves

Each task sends one submission to the bridge and finishes in well under a second; no worker or
triggerer waits on Azure ML. When an operation completes, the bridge posts its `on_completed`
asset with `extra["operation"]` and `extra["result"]` (the model version, the deployment, ...),
and the next DAG templates its arguments from that event with `from_triggering_event`. Every
step routes a failure (or a refusal, with its reason) to one asset, which `azureml_lifecycle_
failed` reports. The production workspace has a bridge of its own, reached through the Airflow
connection `azureml_bridge_prod` (docs/dags.md, "Several workspaces").
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowFailException

from bridge.provider import (
    DeployAzureMLModelOperator,
    RegisterAzureMLModelOperator,
    SetAzureMLTrafficOperator,
    ShareAzureMLModelOperator,
    SubmitAzureMLJobOperator,
    from_triggering_event,
)

log = logging.getLogger(__name__)

MODEL = "bridge-demo-model"
ENDPOINT = "bridge-demo"  # online endpoint names are unique per region: production has its own
PRODUCTION_ENDPOINT = "bridge-demo-prod"
STAGING = "green"
REGISTRY = "bridge-demo-registry"
INSTANCE_TYPE = "Standard_DS3_v2"

TRAINED = Asset("azureml://bridge-demo/lifecycle/train/completed")
REGISTERED = Asset("azureml://bridge-demo/lifecycle/register/completed")
STAGED = Asset("azureml://bridge-demo/lifecycle/stage/completed")
SMOKE_TESTED = Asset("azureml://bridge-demo/lifecycle/smoke-test/passed")
LIVE = Asset("azureml://bridge-demo/lifecycle/promote/completed")
SHARED = Asset("azureml://bridge-demo/lifecycle/share/completed")
IN_PRODUCTION = Asset("azureml://bridge-demo/lifecycle/production/completed")
LIFECYCLE_FAILED = Asset("azureml://bridge-demo/lifecycle/failed")

FAILURES: dict[str, Any] = {"on_failed": [LIFECYCLE_FAILED], "on_canceled": [LIFECYCLE_FAILED]}
TAGS = ["azureml", "bridge-demo", "lifecycle"]


@dag(schedule=None, tags=TAGS)
def azureml_train_to_prod() -> None:
    """(1) Train: the job's output `model` is where the model files land."""
    SubmitAzureMLJobOperator(
        task_id="train", job="../jobs/train.yml", on_completed=[TRAINED], **FAILURES
    )


@dag(schedule=[TRAINED], tags=TAGS)
def azureml_lifecycle_register() -> None:
    """(2) Register the model from the output `model` of the job that completed."""
    RegisterAzureMLModelOperator(
        task_id="register",
        name=MODEL,
        from_job=from_triggering_event("job_name"),
        output_name="model",
        # An MLflow model deploys without scoring code; a custom_model also takes environment,
        # code and scoring_script at deployment.
        model_type="mlflow_model",
        tags={"trained_by": from_triggering_event("job_name")},
        on_completed=[REGISTERED],
        **FAILURES,
    )


@dag(schedule=[REGISTERED], tags=TAGS)
def azureml_lifecycle_stage() -> None:
    """(3) Deploy the registered version to `green` at 0 %: it serves nothing until promoted."""
    DeployAzureMLModelOperator(
        task_id="deploy_green",
        endpoint=ENDPOINT,
        deployment=STAGING,
        model=from_triggering_event("result", "model"),  # "name:version"
        instance_type=INSTANCE_TYPE,
        traffic=0,
        on_completed=[STAGED],
        **FAILURES,
    )


@dag(schedule=[STAGED], tags=TAGS)
def azureml_lifecycle_smoke_test() -> None:
    """(4) Check, from the events alone (no credential, no call), that `green` serves the model
    version registered last, at no traffic yet; pass the model on to the promotion."""

    @task(inlets=[REGISTERED], outlets=[SMOKE_TESTED])
    def smoke_test(
        triggering_asset_events: Any = None, inlet_events: Any = None, outlet_events: Any = None
    ) -> dict[str, Any]:
        staged = triggering_asset_events[STAGED][-1].extra
        registered = inlet_events[REGISTERED][-1].extra  # the newest registration
        result, expected = staged["result"], registered["result"]["model"]
        problems = [
            f"{name}: {found!r}, expected {wanted!r}"
            for name, found, wanted in (
                ("operation", staged.get("operation"), "deploy"),
                ("deployment", result.get("deployment"), STAGING),
                ("model", result.get("model"), expected),
                ("traffic", (result.get("traffic") or {}).get(STAGING, 0), 0),
            )
            if found != wanted
        ]
        if not result.get("scoring_uri"):
            problems.append("no scoring_uri")
        if problems:
            raise AirflowFailException("smoke test failed: " + "; ".join(problems))
        model_name, _, model_version = expected.partition(":")
        passed = {
            "endpoint": result["endpoint"],
            "deployment": STAGING,
            "model": expected,
            "name": model_name,
            "version": model_version,
            "scoring_uri": result["scoring_uri"],
        }
        outlet_events[SMOKE_TESTED].extra = passed
        log.info("green serves %s at %s", expected, result["scoring_uri"])
        return passed

    smoke_test()


@dag(schedule=[SMOKE_TESTED], tags=TAGS)
def azureml_lifecycle_promote() -> None:
    """(5) Shift all of the endpoint's traffic to `green`."""
    SetAzureMLTrafficOperator(
        task_id="shift_traffic",
        endpoint=from_triggering_event("endpoint"),
        traffic={STAGING: 100},
        on_completed=[LIVE],
        **FAILURES,
    )


@dag(schedule=(SMOKE_TESTED & LIVE), tags=TAGS)
def azureml_lifecycle_share() -> None:
    """(6) Once green is live, share the model it serves to the registry."""
    ShareAzureMLModelOperator(
        task_id="share",
        name=from_triggering_event("name", asset=SMOKE_TESTED),
        version=from_triggering_event("version", asset=SMOKE_TESTED),
        registry=REGISTRY,
        on_completed=[SHARED],
        **FAILURES,
    )


@dag(schedule=[SHARED], tags=TAGS)
def azureml_lifecycle_production() -> None:
    """(7) Deploy the registry's copy in the production workspace: through the connection
    `azureml_bridge_prod`, to that workspace's own bridge."""
    DeployAzureMLModelOperator(
        task_id="deploy_production",
        conn_id="azureml_bridge_prod",
        endpoint=PRODUCTION_ENDPOINT,
        deployment="blue",
        # azureml://registries/<registry>/models/<name>/versions/<version>
        model=from_triggering_event("result", "model"),
        instance_type=INSTANCE_TYPE,
        instance_count=2,
        on_completed=[IN_PRODUCTION],
        **FAILURES,
    )


@dag(schedule=[IN_PRODUCTION], tags=TAGS)
def azureml_lifecycle_in_production() -> None:
    """The end of the line: production serves the model (and Airflow knows the asset the bridge
    posts to, as it must know every route's asset)."""

    @task
    def announce(triggering_asset_events: Any = None) -> dict[str, Any]:
        result = triggering_asset_events[IN_PRODUCTION][-1].extra["result"]
        log.info("production serves %s at %s", result["model"], result["scoring_uri"])
        return dict(result)

    announce()


@dag(schedule=[LIFECYCLE_FAILED], tags=TAGS)
def azureml_lifecycle_failed() -> None:
    """Any step that failed, was canceled or was refused (with the bridge's reason)."""

    @task
    def report(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        reports = []
        for event in triggering_asset_events.get(LIFECYCLE_FAILED, []):
            extra = event.extra
            step = (extra.get("origin") or {}).get("dag_id")
            what = extra.get("operation") or "job"
            reason = extra.get("reason") or extra.get("studio_url") or "see the bridge's trail"
            log.error("%s (%s) %s: %s", step, what, extra.get("status"), reason)
            reports.append({"step": step, "operation": what, "status": extra.get("status"),
                            "reason": reason})  # fmt: skip
        return reports

    report()


azureml_train_to_prod()
azureml_lifecycle_register()
azureml_lifecycle_stage()
azureml_lifecycle_smoke_test()
azureml_lifecycle_promote()
azureml_lifecycle_share()
azureml_lifecycle_production()
azureml_lifecycle_in_production()
azureml_lifecycle_failed()
