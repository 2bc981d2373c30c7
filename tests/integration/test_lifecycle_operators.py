"""The lifecycle operators run for real: `dag.test()` in the Airflow venv, each DAG run started as
if by the asset event the bridge posts, sending through the production `ServiceBusSender` to a
local Service Bus (`bridge.local.servicebus`) in this process.

A run's triggering events are rows Airflow itself reads: the runner below adds the asset event
(with the `extra` the bridge posts) and links it to the run `dag.test()` creates, the way the
scheduler links the events a run consumed. So `triggering_asset_events`, `inlet_events` and
the operators' templates are Airflow's own, as in production. Studio URLs and the Jinja helper
are pure and checked without Airflow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import Origin, Submission, YamlJob, job_name
from bridge.local.servicebus import LocalServiceBus
from bridge.operations import (
    BatchScore,
    Cancel,
    Deploy,
    JobOutputReference,
    RegisterModel,
    SetTraffic,
    ShareModel,
)
from bridge.provider import from_triggering_event, studio
from tests.integration.test_operator import (
    AIRFLOW_PYTHON,
    EXAMPLE_DAGS,
    RUNNER,
    WORKSPACE_ID,
    DagRunResult,
    airflow_env,
    emulator_env,
    migrated_db,
    parse_runner_output,
    queue_messages,
    submissions_by_dag,
)

pytestmark = pytest.mark.integration
__all__ = ["migrated_db"]  # the fixture, shared with test_operator.py

QUEUES = ("operations", "examples", "production")
PRODUCTION_WORKSPACE_ID = WORKSPACE_ID.replace("/workspaces/ws", "/workspaces/prod")
UPSTREAM = "azureml://bridge-tests/lifecycle-operators/upstream"
DONE = "azureml://bridge-tests/lifecycle-operators/completed"
FAILED = "azureml://bridge-tests/lifecycle-operators/failed"
# A job name as the bridge gives one (built here: a literal of 20 hex digits reads as a secret).
TRAINING_JOB = job_name(Origin(dag_id="azureml_train", run_id="manual__1", task_id="train"))
SENT_IN = re.compile(r"Submitted Azure ML operation (\S+) (\S+) in \d+ ms")

# Adds each DAG's triggering asset events when `dag.test()` creates its run, then runs
# operator_runner.py. LIFECYCLE_EVENTS: {dag_id: [{"uri", "extra", "consumed", "age"}]}; an event
# not consumed is only in the asset's history (what `inlet_events` reads).
EVENT_RUNNER = textwrap.dedent("""
    import json, os, runpy, sys
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import event, insert, select

    from airflow.models.asset import AssetEvent, AssetModel, association_table
    from airflow.models.dagrun import DagRun

    EVENTS = json.loads(os.environ["LIFECYCLE_EVENTS"])


    @event.listens_for(DagRun, "after_insert")
    def consumed(mapper, connection, run):
        now = datetime.now(timezone.utc)
        for spec in EVENTS.get(run.dag_id, []):
            asset_id = connection.execute(
                select(AssetModel.id).where(AssetModel.uri == spec["uri"])).scalar_one()
            added = connection.execute(insert(AssetEvent.__table__).values(
                asset_id=asset_id, extra=spec["extra"],
                timestamp=now - timedelta(seconds=spec.get("age", 0))))
            if spec.get("consumed", True):
                connection.execute(insert(association_table).values(
                    dag_run_id=run.id, event_id=added.inserted_primary_key[0]))


    runner = sys.argv.pop(1)
    sys.argv[0] = runner
    runpy.run_path(runner, run_name="__main__")
""")


def bridge_event(
    uri: str, operation: str | None, result: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """An asset event as the bridge posts it for a completed job or operation."""
    body: dict[str, Any] = {
        "job_name": extra.pop("job_name", "lifecycle-0000000000000000000a-airflow"),
        "status": "Completed",
        "workspace": "ws",
        "via": "event",
        "origin": {"dag_id": "upstream", "run_id": "manual__1", "task_id": "t", "map_index": -1},
        **extra,
    }
    if operation is not None:
        body.update(operation=operation, result=dict(result or {}))
    return {"uri": uri, "extra": body}


def run_with_events(
    root: Path,
    migrated_db: Path,
    dags: Path,
    events: Mapping[str, list[dict[str, Any]]],
    extra: Mapping[str, str],
) -> dict[str, DagRunResult]:
    """`dag.test()` each DAG named in `events`, in a fresh copy of the migrated database."""
    home = root / "airflow"
    home.mkdir()
    shutil.copy(migrated_db, home / "airflow.db")
    script = root / "event_runner.py"
    script.write_text(EVENT_RUNNER)
    env = airflow_env(home, dags_folder=dags if dags.is_dir() else dags.parent, extra=extra)
    env["LIFECYCLE_EVENTS"] = json.dumps(events)
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), str(script), str(RUNNER), str(dags), *events],
        env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return parse_runner_output(completed.stdout, output)


@pytest.fixture(scope="module")
def bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus() as running:
        for queue in QUEUES:
            running.create_queue(queue)
        yield running


# --- one DAG per operator, templated from the event that started it ----------------------------

OPERATOR_DAGS = """
from airflow.sdk import Asset, dag

from bridge.provider import (
    CancelAzureMLJobOperator, DeployAzureMLModelOperator, InvokeAzureMLBatchEndpointOperator,
    RegisterAzureMLModelOperator, SetAzureMLTrafficOperator, ShareAzureMLModelOperator,
    from_triggering_event,
)

UPSTREAM = Asset("{upstream}")
ROUTES = {{"on_completed": ["{done}"], "on_failed": ["{failed}"]}}
# The expression a DAG author writes by hand, as the docs show it.
VERSION = "{{{{ (triggering_asset_events.values() | first | first).extra['result']['version'] }}}}"


def operation(dag_id, operator, retries=3, **arguments):
    @dag(dag_id=dag_id, schedule=[UPSTREAM],
         default_args={{"retries": retries, "retry_delay": 0}})
    def consumer():
        operator(task_id="op", **ROUTES, **arguments)

    consumer()


operation("register_model", RegisterAzureMLModelOperator, name="churn",
          from_job=from_triggering_event("job_name"), version=VERSION,
          tags={{"source": from_triggering_event("job_name")}}, partition_key="{{{{ ds }}}}",
          trigger={{"completed": [
              {{"dag_id": "notify", "conf": {{"model": from_triggering_event("result", "model")}}}}
          ]}})
operation("deploy_model", DeployAzureMLModelOperator, endpoint="churn-ep", deployment="green",
          model=from_triggering_event("result", "model"), instance_type="Standard_DS3_v2",
          traffic=0)
operation("set_traffic", SetAzureMLTrafficOperator,
          endpoint=from_triggering_event("result", "endpoint"),
          traffic={{"green": "{{{{ 100 - 20 }}}}", "blue": 20}})
operation("batch_score", InvokeAzureMLBatchEndpointOperator, endpoint="churn-batch",
          inputs={{"data": {{"type": "uri_folder",
                            "path": from_triggering_event("outputs", "data", "uri")}}}})
operation("cancel_job", CancelAzureMLJobOperator, job=from_triggering_event("job_name"))
operation("cancel_by_origin", CancelAzureMLJobOperator,
          origin={{"dag_id": "azureml_train", "run_id": "manual__1", "task_id": "submit_training"}})
operation("share_model", ShareAzureMLModelOperator, registry="shared-models",
          name=from_triggering_event("result", "name"),
          version=from_triggering_event("result", "version"))
operation("invalid_endpoint", DeployAzureMLModelOperator, endpoint="1-starts-with-a-digit",
          deployment="green", model="churn:7", instance_type="Standard_DS3_v2")
operation("invalid_traffic", SetAzureMLTrafficOperator, endpoint="churn-ep",
          traffic={{"green": 60, "blue": 20}})
operation("invalid_source", RegisterAzureMLModelOperator, name="churn",
          from_job=from_triggering_event("result", "missing_job", ))
operation("no_triggering_event", DeployAzureMLModelOperator, retries=0, endpoint="churn-ep",
          deployment="green", model=from_triggering_event("result", "model"),
          instance_type="Standard_DS3_v2")
"""
REGISTERED = bridge_event(
    UPSTREAM, "register_model",
    {"name": "churn", "version": "7", "id": "azureml:churn:7", "model": "churn:7"},
    job_name=TRAINING_JOB,
)  # fmt: skip
OPERATOR_EVENTS = {
    "register_model": [
        bridge_event(
            UPSTREAM,
            "register_model",
            {"version": "7", "model": "churn:older"},
            job_name="older-job",
            age=30,
        ),
        REGISTERED,
    ],
    "deploy_model": [REGISTERED],
    "set_traffic": [bridge_event(UPSTREAM, "deploy", {"endpoint": "churn-ep"})],
    "batch_score": [
        bridge_event(
            UPSTREAM,
            None,
            outputs={"data": {"type": "uri_folder", "uri": "azureml://datastores/d/paths/p"}},
        )
    ],
    "cancel_job": [bridge_event(UPSTREAM, None, job_name=TRAINING_JOB)],
    "cancel_by_origin": [REGISTERED],
    "share_model": [REGISTERED],
    "invalid_endpoint": [REGISTERED],
    "invalid_traffic": [REGISTERED],
    "invalid_source": [bridge_event(UPSTREAM, "register_model", {"missing_job": ""})],
    "no_triggering_event": [],
}
SENDING = ["register_model", "deploy_model", "set_traffic", "batch_score", "cancel_job",
           "cancel_by_origin", "share_model"]  # fmt: skip
INVALID = {
    "invalid_endpoint": r"operation\.deploy\.endpoint: String should match pattern",
    "invalid_traffic": r"traffic must add up to 100, not 80",
    "invalid_source": r"give exactly one of from_job \(a job's named output\) and path",
}


@pytest.fixture(scope="module")
def operator_runs(
    bus: LocalServiceBus, migrated_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRunResult]:
    root = tmp_path_factory.mktemp("lifecycle-operators")
    dags = root / "dags"
    dags.mkdir()
    source = OPERATOR_DAGS.format(upstream=UPSTREAM, done=DONE, failed=FAILED)
    (dags / "consumers.py").write_text(textwrap.dedent(source))
    extra = {**emulator_env(bus, "operations"), "BRIDGE_AZUREML_WORKSPACE_ID": WORKSPACE_ID}
    return run_with_events(root, migrated_db, dags / "consumers.py", OPERATOR_EVENTS, extra)


def sent_operations(bus: LocalServiceBus, queue: str) -> dict[str, Submission]:
    """Each DAG's submission, by DAG id: the test fails if a DAG sent two."""
    found = {}
    for dag_id, submissions in submissions_by_dag(queue_messages(bus, queue)).items():
        [submission] = submissions
        found[dag_id] = submission
    return found


def test_each_operator_sends_one_submission_carrying_its_operation(
    bus: LocalServiceBus, operator_runs: dict[str, DagRunResult]
) -> None:
    assert {d: operator_runs[d].state for d in SENDING} == dict.fromkeys(SENDING, "success")
    sent = sent_operations(bus, "operations")
    assert sorted(sent) == sorted(SENDING)  # the invalid ones sent nothing
    kinds = {dag_id: type(s.operation) for dag_id, s in sent.items()}
    assert kinds == {
        "register_model": RegisterModel, "deploy_model": Deploy, "set_traffic": SetTraffic,
        "batch_score": BatchScore, "cancel_job": Cancel, "cancel_by_origin": Cancel,
        "share_model": ShareModel,
    }  # fmt: skip
    for dag_id, submission in sent.items():
        run = operator_runs[dag_id]
        assert submission.job is None
        assert submission.origin == Origin(dag_id=dag_id, run_id=run.result["run_id"],
                                           task_id="op")  # fmt: skip
        assert run.xcom("op") == submission.id  # the submission id, as for a job
        assert submission.on.completed == [DONE] and submission.on.failed == [FAILED]
        # One send, timed by the task itself (the figure is measured in bench/, not here).
        [(kind, name)] = SENT_IN.findall(run.log)
        assert (kind, name) == (submission.kind, submission.id)


def test_templates_read_the_triggering_event_extra(
    bus: LocalServiceBus, operator_runs: dict[str, DagRunResult]
) -> None:
    sent = sent_operations(bus, "operations")
    register = sent["register_model"]
    assert register.operation == RegisterModel(
        name="churn", from_job=JobOutputReference(job=TRAINING_JOB, output="model"), version="7",
        tags={"source": TRAINING_JOB},
    )  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", register.partition_key or "")
    deploy = sent["deploy_model"].operation
    assert isinstance(deploy, Deploy)
    assert (deploy.model, deploy.endpoint, deploy.deployment, deploy.traffic) == (
        "churn:7", "churn-ep", "green", 0,
    )  # fmt: skip
    # A value rendered as text ("80") is read as the number the contract asks for.
    assert sent["set_traffic"].operation == SetTraffic(
        endpoint="churn-ep", traffic={"green": 80, "blue": 20}
    )
    batch = sent["batch_score"].operation
    assert isinstance(batch, BatchScore)
    assert batch.inputs["data"].path == "azureml://datastores/d/paths/p"  # type: ignore[union-attr]
    assert sent["cancel_job"].operation == Cancel(job=TRAINING_JOB)
    assert sent["share_model"].operation == ShareModel(
        name="churn", version="7", registry="shared-models"
    )


def test_the_newest_triggering_event_wins(
    bus: LocalServiceBus, operator_runs: dict[str, DagRunResult]
) -> None:
    """`register_model` consumed an older event of another job first: `from_triggering_event`
    read the newer one's job, and the trigger's conf its model."""
    register = sent_operations(bus, "operations")["register_model"]
    assert isinstance(register.operation, RegisterModel)
    assert register.operation.from_job is not None
    assert register.operation.from_job.job == TRAINING_JOB
    assert register.trigger.completed[0].dag_id == "notify"
    assert register.trigger.completed[0].conf == {"model": "churn:7"}


@pytest.mark.parametrize(("dag_id", "problem"), sorted(INVALID.items()))
def test_invalid_operation_fails_the_task_without_retries_naming_the_field(
    operator_runs: dict[str, DagRunResult], dag_id: str, problem: str
) -> None:
    run = operator_runs[dag_id]
    assert run.state == "failed"
    assert run.task("op")["try_number"] == 1  # retries=3, yet no retry: nothing can fix it
    assert re.search(problem, run.log), run.log[-3000:]


def test_a_template_without_a_triggering_event_fails_before_sending(
    bus: LocalServiceBus, operator_runs: dict[str, DagRunResult]
) -> None:
    run = operator_runs["no_triggering_event"]
    assert run.state == "failed"
    assert "no_triggering_event" not in sent_operations(bus, "operations")


def test_links_lead_to_the_model_the_endpoint_and_the_job_in_studio(
    bus: LocalServiceBus, operator_runs: dict[str, DagRunResult]
) -> None:
    def pushed(dag_id: str, key: str) -> Any:
        return operator_runs[dag_id].xcom("op", key)

    wsid = f"?wsid={WORKSPACE_ID}"
    endpoint = f"https://ml.azure.com/endpoints/realtime/churn-ep/detail{wsid}"
    assert pushed("register_model", "model_url") == (
        f"https://ml.azure.com/model/churn:7/details{wsid}"
    )
    assert (
        pushed("deploy_model", "model_url") == f"https://ml.azure.com/model/churn:7/details{wsid}"
    )
    assert pushed("deploy_model", "endpoint_url") == endpoint
    assert pushed("set_traffic", "endpoint_url") == endpoint
    batch_job = sent_operations(bus, "operations")["batch_score"].id
    assert pushed("batch_score", "studio_url") == f"https://ml.azure.com/runs/{batch_job}{wsid}"
    assert pushed("cancel_job", "studio_url") == f"https://ml.azure.com/runs/{TRAINING_JOB}{wsid}"
    canceled = job_name(Origin(dag_id="azureml_train", run_id="manual__1",
                               task_id="submit_training"))  # fmt: skip
    assert pushed("cancel_by_origin", "studio_url") == f"https://ml.azure.com/runs/{canceled}{wsid}"
    assert pushed("share_model", "model_url") == (
        "https://ml.azure.com/registries/shared-models/models/churn/version/7"
    )
    # What the API server shows: the task runner stored each link's answer as its own XCom.
    assert pushed("deploy_model", "_link_AzureMLModelLink") == pushed("deploy_model", "model_url")
    assert pushed("deploy_model", "_link_AzureMLEndpointLink") == endpoint


# --- the example: from training to production -------------------------------------------------

LIFECYCLE = "azureml://bridge-demo/lifecycle"
MODEL = "bridge-demo-model"
SCORING_URI = "https://bridge-demo.westeurope.inference.ml.azure.com/score"
REGISTERED_7 = bridge_event(
    f"{LIFECYCLE}/register/completed", "register_model",
    {"name": MODEL, "version": "7", "id": f"azureml:{MODEL}:7", "model": f"{MODEL}:7"},
)  # fmt: skip
STAGED_7 = bridge_event(
    f"{LIFECYCLE}/stage/completed", "deploy",
    {"endpoint": "bridge-demo", "deployment": "green", "model": f"{MODEL}:7",
     "scoring_uri": SCORING_URI, "traffic": {"blue": 100, "green": 0}},
)  # fmt: skip
SMOKE_TESTED_7 = {
    "uri": f"{LIFECYCLE}/smoke-test/passed",
    "extra": {"endpoint": "bridge-demo", "deployment": "green", "model": f"{MODEL}:7",
              "name": MODEL, "version": "7", "scoring_uri": SCORING_URI},
}  # fmt: skip
SHARED_7 = bridge_event(
    f"{LIFECYCLE}/share/completed", "share_model",
    {"registry": "bridge-demo-registry", "name": MODEL, "version": "7",
     "id": f"azureml://registries/bridge-demo-registry/models/{MODEL}/versions/7",
     "model": f"azureml://registries/bridge-demo-registry/models/{MODEL}/versions/7"},
)  # fmt: skip
EXAMPLE_EVENTS = {
    "azureml_train_to_prod": [],
    "azureml_lifecycle_register": [
        bridge_event(
            f"{LIFECYCLE}/train/completed",
            None,
            job_name=TRAINING_JOB,
            outputs={"model": {"type": "uri_folder", "uri": "azureml://x"}},
        )
    ],
    "azureml_lifecycle_stage": [REGISTERED_7],
    # The registration is in the asset's history (an inlet), the deployment started the run.
    "azureml_lifecycle_smoke_test": [{**REGISTERED_7, "consumed": False}, STAGED_7],
    "azureml_lifecycle_promote": [SMOKE_TESTED_7],
    "azureml_lifecycle_share": [
        SMOKE_TESTED_7,
        bridge_event(
            f"{LIFECYCLE}/promote/completed",
            "set_traffic",
            {"endpoint": "bridge-demo", "traffic": {"green": 100}},
        ),
    ],
    "azureml_lifecycle_production": [SHARED_7],
}


@pytest.fixture(scope="module")
def example_runs(
    bus: LocalServiceBus, migrated_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRunResult]:
    root = tmp_path_factory.mktemp("lifecycle-example")
    production = {
        "conn_type": "azureml_bridge", "host": bus.address, "schema": "production",
        "extra": {"use_development_emulator": True, "workspace_id": PRODUCTION_WORKSPACE_ID},
    }  # fmt: skip
    extra = {
        **emulator_env(bus, "examples"),
        "BRIDGE_AZUREML_WORKSPACE_ID": WORKSPACE_ID,
        "AIRFLOW_CONN_AZUREML_BRIDGE_PROD": json.dumps(production),
    }
    return run_with_events(
        root, migrated_db, EXAMPLE_DAGS / "azureml_train_to_prod.py", EXAMPLE_EVENTS, extra
    )


def test_example_lifecycle_sends_each_step_from_the_previous_steps_event(
    bus: LocalServiceBus, example_runs: dict[str, DagRunResult]
) -> None:
    sent = sent_operations(bus, "examples")
    train = sent["azureml_train_to_prod"]
    assert isinstance(train.job, YamlJob) and "model" in train.job.spec["outputs"]
    assert train.on.completed == [f"{LIFECYCLE}/train/completed"]
    assert sent["azureml_lifecycle_register"].operation == RegisterModel(
        name=MODEL, type="mlflow_model", tags={"trained_by": TRAINING_JOB},
        from_job=JobOutputReference(job=TRAINING_JOB, output="model"),
    )  # fmt: skip
    stage = sent["azureml_lifecycle_stage"].operation
    assert isinstance(stage, Deploy)
    assert (stage.endpoint, stage.deployment, stage.model, stage.traffic) == (
        "bridge-demo", "green", f"{MODEL}:7", 0,
    )  # fmt: skip
    assert sent["azureml_lifecycle_promote"].operation == SetTraffic(
        endpoint="bridge-demo", traffic={"green": 100}
    )
    assert sent["azureml_lifecycle_share"].operation == ShareModel(
        name=MODEL, version="7", registry="bridge-demo-registry"
    )
    assert all(s.on.failed == [f"{LIFECYCLE}/failed"] for s in sent.values())


def test_example_smoke_test_checks_the_deployment_from_the_events_and_passes_the_model_on(
    example_runs: dict[str, DagRunResult],
) -> None:
    run = example_runs["azureml_lifecycle_smoke_test"]
    assert run.state == "success", run.log[-3000:]
    assert run.xcom("smoke_test") == SMOKE_TESTED_7["extra"]


def test_example_production_deploys_the_registry_copy_through_its_own_connection(
    bus: LocalServiceBus, example_runs: dict[str, DagRunResult]
) -> None:
    run = example_runs["azureml_lifecycle_production"]
    assert run.state == "success", run.log[-2000:]
    [submission] = submissions_by_dag(queue_messages(bus, "production"))[
        "azureml_lifecycle_production"
    ]
    assert isinstance(submission.operation, Deploy)
    assert submission.operation.model == SHARED_7["extra"]["result"]["model"]
    assert "Sending through Airflow connection azureml_bridge_prod" in run.log
    assert run.xcom("deploy_production", "endpoint_url").endswith(PRODUCTION_WORKSPACE_ID)


# --- pure: no Airflow ------------------------------------------------------------------------


def test_from_triggering_event_reads_the_newest_event_or_one_assets() -> None:
    assert from_triggering_event("result", "version") == (
        "{{ (triggering_asset_events.values() | first | sort(attribute='timestamp') | last)"
        ".extra['result']['version'] }}"
    )
    on_asset = from_triggering_event("model", asset="azureml://a/b")
    assert "selectattr('asset.uri', 'equalto', 'azureml://a/b')" in on_asset
    with pytest.raises(ValueError, match="at least one key"):
        from_triggering_event()


def test_studio_urls_need_the_workspace_and_a_version() -> None:
    assert studio.model_url("churn", None, WORKSPACE_ID) is None  # Azure ML picks it later
    assert studio.endpoint_url("churn-ep", None) is None
    assert studio.job_url("a-job", WORKSPACE_ID) == (
        f"https://ml.azure.com/runs/a-job?wsid={WORKSPACE_ID}"
    )
