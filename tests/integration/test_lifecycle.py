"""Operations beyond jobs on the real local stack (docs/lifecycle.md): each one's success, its
failure, a policy refusal, and exactly one asset event per outcome.

The submissions go through the local Service Bus to the dev host, which runs them against the Azure
ML emulator with azure-ai-ml; outcomes reach the real Airflow as asset events."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from bridge.contracts import Submission
from bridge.ledger import JobRecord, JobState
from bridge.local.stack import Stack
from bridge.service import Result
from tests.integration.conftest import asset_events, eventually, own_ledger, run_bridge, send

pytestmark = pytest.mark.integration

DONE = "azureml://bridge-tests/lifecycle/completed"
FAILED = "azureml://bridge-tests/lifecycle/failed"
CANCELED = "azureml://bridge-tests/lifecycle/canceled"
MODEL_ANYWHERE = "azureml://local-workspace/models/loop-anywhere"
JOBS_DONE = "azureml://bridge-tests/loop/completed"
JOBS_CANCELED = "azureml://bridge-tests/loop/canceled"


def operation(operation: dict[str, Any], task: str = "operate") -> Submission:
    origin = {"dag_id": "loop_lifecycle", "run_id": secrets.token_hex(6), "task_id": task}
    return Submission.model_validate({
        "origin": origin, "operation": operation,
        "on": {"completed": [DONE], "failed": [FAILED], "canceled": [CANCELED]},
    })  # fmt: skip


def events_of(stack: Stack, uri: str, name: str) -> list[Any]:
    return [e for e in asset_events(stack, uri) if e.extra.get("job_name") == name]


def routed(stack: Stack, uri: str, name: str, timeout: float = 40) -> Any:
    """The one asset event the submission's outcome posted on `uri` (waits for it)."""
    eventually(lambda: events_of(stack, uri, name), timeout, what=f"{name} routed to {uri}")
    record = eventually(lambda: finished(stack, name), timeout, what=f"{name} concluded")
    assert record.state.finished
    [event] = events_of(stack, uri, name)
    return event


def finished(stack: Stack, name: str) -> JobRecord | None:
    record = stack.bridge.ledger.get_job(name)
    return record if record is not None and record.state.finished else None


def model_puts(stack: Stack, name: str) -> list[Any]:
    return [r for r in stack.emulator.requests
            if r.method == "PUT" and f"/models/{name}/versions/" in r.path]  # fmt: skip


# --- register_model -------------------------------------------------------------------------------


def test_a_registration_reaches_airflow_once_with_the_version_it_took(loop_stack: Stack) -> None:
    name = f"loop-{secrets.token_hex(4)}"
    register = operation({
        "kind": "register_model", "name": name, "type": "custom_model",
        "path": "azureml://datastores/workspaceblobstore/paths/models/churn/",
        "tags": {"evaluation": "passed"},
    })  # fmt: skip
    send(loop_stack, register)
    event = routed(loop_stack, DONE, register.id)
    assert event.extra["operation"] == "register_model"
    assert event.extra["status"] == "Registered" and event.extra["via"] == "call"
    result = event.extra["result"]
    assert (result["name"], result["version"], result["model"]) == (name, "1", f"{name}:1")
    assert result["id"].endswith(f"/models/{name}/versions/1")
    stored = loop_stack.emulator.models.get(name, "1")
    assert stored is not None and stored.properties["tags"]["evaluation"] == "passed"
    assert stored.properties["tags"]["bridge_submission"] == register.id

    # Delivered again (a replay; Service Bus itself drops a resent message id within the hour):
    # nothing new is registered and nothing is posted. (The sweep may resume the submission while
    # its first delivery runs: then the same version is written twice, never a second version.)
    report = loop_stack.bridge.submit(register.to_json().encode(), f"again-{register.id}")
    assert report.result is Result.DUPLICATE
    puts = model_puts(loop_stack, name)
    assert puts and all(put.path.endswith(f"/models/{name}/versions/1") for put in puts)
    assert len(events_of(loop_stack, DONE, register.id)) == 1
    assert loop_stack.emulator.models.get(name, "2") is None
    record = loop_stack.bridge.ledger.get_job(register.id)
    assert record is not None and json.loads(record.result or "{}")["version"] == "1"

    # `bridge show` tells an operator what it produced, and asks Azure ML for no job.
    shown = run_bridge(loop_stack.settings, "show", register.id)
    assert shown.returncode == 0, shown.stderr
    assert "(register_model)" in shown.stdout and '"version": "1"' in shown.stdout
    assert "Azure ML has no job" not in shown.stdout
    assert "azureml models.create_or_update" in shown.stdout


def blocked_with(stack: Stack, name: str, words: str) -> JobRecord:
    """The submission's record once its latest attempt blocked with `words` in the reason."""

    def found() -> JobRecord | None:
        record = stack.bridge.ledger.get_job(name)
        return record if record is not None and words in (record.blocked or "") else None

    return eventually(found, what=f"{name} blocked with {words!r}")


def test_a_registration_from_a_job_not_done_yet_waits_for_its_output(loop_stack: Stack) -> None:
    """The job may still be on its way, or running: it blocks (and heals); nothing is written."""
    name, job = f"loop-{secrets.token_hex(4)}", f"later-{secrets.token_hex(4)}-airflow"
    register = operation({"kind": "register_model", "name": name,
                          "from_job": {"job": job, "output": "model"}})  # fmt: skip
    send(loop_stack, register)
    record = blocked_with(loop_stack, register.id, f"job {job} is not in Azure ML (yet)")
    assert record.state is JobState.ACCEPTED and "[missing-resource]" in (record.blocked or "")

    loop_stack.emulator.seed(job, "Running")
    blocked_with(loop_stack, register.id, f"job {job} is Running")
    assert model_puts(loop_stack, name) == [] and events_of(loop_stack, FAILED, register.id) == []

    loop_stack.emulator.seed(job, "Completed")  # the job ended: its output is there now
    event = routed(loop_stack, DONE, register.id)
    assert event.extra["result"]["model"] == f"{name}:1"
    stored = loop_stack.emulator.models.get(name, "1")
    assert stored is not None and stored.properties["tags"]["bridge_submission"] == register.id


def test_a_registration_from_a_job_that_failed_reaches_the_failure_route(loop_stack: Stack) -> None:
    """Its output will never exist: no change of configuration makes this one succeed."""
    name, job = f"loop-{secrets.token_hex(4)}", f"failed-{secrets.token_hex(4)}-airflow"
    loop_stack.emulator.seed(job, "Failed")
    register = operation({"kind": "register_model", "name": name,
                          "from_job": {"job": job, "output": "model"}})  # fmt: skip
    send(loop_stack, register)
    event = routed(loop_stack, FAILED, register.id)
    assert event.extra["status"] == "Rejected"
    assert f"job {job} ended Failed: its output model never will exist" in event.extra["reason"]
    assert model_puts(loop_stack, name) == []


def test_a_registration_the_policy_refuses_names_the_rule(loop_stack: Stack) -> None:
    register = operation({"kind": "register_model", "name": "prod-churn", "path": "azureml://x/m"})
    send(loop_stack, register)
    event = routed(loop_stack, FAILED, register.id)
    assert "policy:" in event.extra["reason"] and "prod-churn" in event.extra["reason"]
    assert model_puts(loop_stack, "prod-churn") == []


# --- cancel ---------------------------------------------------------------------------------------


def test_a_cancel_by_origin_cancels_the_job_whose_own_route_fires_once(loop_stack: Stack) -> None:
    origin = {"dag_id": "loop_lifecycle", "run_id": secrets.token_hex(6), "task_id": "train"}
    job = Submission.model_validate({
        "origin": origin,
        "job": {"command": "sleep 300", "environment": "azureml:loop-env:1",
                "compute": "cpu-cluster", "experiment_name": "loop"},
        "on": {"completed": [JOBS_DONE], "canceled": [JOBS_CANCELED]},
    })  # fmt: skip
    send(loop_stack, job)
    loop_stack.emulator.wait_for_status(job.id, ["Running"], timeout=30)
    cancel = operation({"kind": "cancel", "origin": origin}, task="stop")
    send(loop_stack, cancel)

    done = routed(loop_stack, DONE, cancel.id)
    assert done.extra["operation"] == "cancel" and done.extra["result"]["job"] == job.id
    canceled = routed(loop_stack, JOBS_CANCELED, job.id)
    assert canceled.extra["status"] == "Canceled"
    cancels = [r for r in loop_stack.emulator.requests if r.path.endswith(f"/jobs/{job.id}/cancel")]
    assert len(cancels) == 1

    # Cancelling it again changes nothing in Azure ML and reports the job as it ended.
    again = operation({"kind": "cancel", "job": job.id}, task="stop-again")
    send(loop_stack, again)
    event = routed(loop_stack, DONE, again.id)
    assert event.extra["result"]["status"] == "already canceled"
    assert [r for r in loop_stack.emulator.requests
            if r.path.endswith(f"/jobs/{job.id}/cancel")] == cancels  # fmt: skip


def test_a_cancel_of_a_job_not_submitted_yet_waits_for_it(loop_stack: Stack) -> None:
    """Its submission may still be on its way: a resource not there yet blocks and heals."""
    origin = {"dag_id": "loop_lifecycle", "run_id": secrets.token_hex(6), "task_id": "later"}
    cancel = operation({"kind": "cancel", "origin": origin}, task="stop-early")
    send(loop_stack, cancel)

    def blocked() -> JobRecord | None:
        found = loop_stack.bridge.ledger.get_job(cancel.id)
        return found if found is not None and found.blocked else None

    record = eventually(blocked, what="cancel blocked")
    assert record.state is JobState.ACCEPTED and "[missing-resource]" in (record.blocked or "")
    assert events_of(loop_stack, FAILED, cancel.id) == []


# --- models registered anywhere -------------------------------------------------------------------


def test_a_model_registered_anywhere_reaches_its_asset_once(loop_stack: Stack) -> None:
    """Registered by someone else (a pipeline step, Studio): the workspace's ModelRegistered
    event becomes an asset event on azureml://<workspace>/models/<name>, once per version."""
    from tests.integration.test_loop import post

    version = str(secrets.randbelow(10**6) + 1)
    event = {
        "id": secrets.token_hex(8),
        "topic": loop_stack.emulator.workspace_id,
        "subject": f"models/loop-anywhere:{version}",
        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        "eventTime": "2026-12-04T10:00:00Z",
        "data": {"modelName": "loop-anywhere", "modelVersion": version,
                 "modelTags": {"stage": "candidate"}, "modelProperties": {"auc": "0.91"}},
        "dataVersion": "2", "metadataVersion": "1",
    }  # fmt: skip
    for _ in range(2):  # Event Grid delivers at least once
        status, body = post(loop_stack, [event], "application/json")
        assert status == 200, body
    mine = [e for e in asset_events(loop_stack, MODEL_ANYWHERE)
            if e.extra.get("result", {}).get("version") == version]  # fmt: skip
    assert len(mine) == 1
    result = mine[0].extra["result"]
    assert result["tags"] == {"stage": "candidate"} and result["properties"] == {"auc": "0.91"}
    assert mine[0].extra["operation"] == "model_registered"

    # A model no DAG has an asset for is acknowledged and posts nothing.
    other = {**event, "id": secrets.token_hex(8), "subject": "models/nobody-wants:1",
             "data": {"modelName": "nobody-wants", "modelVersion": "1"}}  # fmt: skip
    status, body = post(loop_stack, [other], "application/json")
    assert status == 200 and body["results"][0]["result"] == "ignored"


# --- deploy and set_traffic -----------------------------------------------------------------------


def endpoint_name(prefix: str = "ep") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def registered_model(stack: Stack, tags: dict[str, str] | None = None) -> str:
    """A model version in the emulated workspace, registered through azure-ai-ml; `name:1`."""
    from bridge.composition import azureml_jobs
    from bridge.operations import RegisterModel

    name = f"loop-{secrets.token_hex(4)}"
    registration = RegisterModel(name=name, path="azureml://datastores/blob/paths/models/x/")
    azureml_jobs(stack.settings).register_model(
        registration, "1", {"evaluation": "passed"} if tags is None else tags
    )
    return f"{name}:1"


def deploy(endpoint: str, deployment: str, model: str, **fields: Any) -> Submission:
    return operation({
        "kind": "deploy", "endpoint": endpoint, "deployment": deployment, "model": model,
        "instance_type": "Standard_DS3_v2", "instance_count": 1, **fields,
    }, task=f"deploy-{deployment}")  # fmt: skip


def online_writes(stack: Stack, endpoint: str) -> list[Any]:
    return [r for r in stack.emulator.requests
            if r.method == "PUT" and f"/onlineEndpoints/{endpoint}" in r.path]  # fmt: skip


def test_a_first_deployment_creates_the_endpoint_and_takes_all_traffic(loop_stack: Stack) -> None:
    endpoint, model = endpoint_name(), registered_model(loop_stack)
    blue = deploy(endpoint, "blue", model)
    send(loop_stack, blue)
    event = routed(loop_stack, DONE, blue.id)
    assert event.extra["operation"] == "deploy" and event.extra["status"] == "Succeeded"
    result = event.extra["result"]
    assert (result["endpoint"], result["deployment"], result["model"]) == (endpoint, "blue", model)
    assert result["traffic"] == {"blue": 100} and result["scoring_uri"]
    # Endpoint, deployment, traffic, each tagged with the submission. (An ARM event and the sweep
    # racing may write a step twice, the same way: PUTs of named resources.)
    writes = online_writes(loop_stack, endpoint)
    paths = [w.path.split("/onlineEndpoints/")[1] for w in writes]
    assert list(dict.fromkeys(paths)) == [endpoint, f"{endpoint}/deployments/blue"]
    traffic = [w.body["properties"].get("traffic") for w in writes if w.path.endswith(endpoint)]
    assert traffic[0] in (None, {}) and traffic[-1] == {"blue": 100}
    assert all(w.body["tags"]["bridge_submission"] == blue.id for w in writes)
    assert event.extra["via"] == "event"  # the ARM event at completion (the documented profile)


def test_blue_green_deploys_at_zero_then_shifts_traffic(loop_stack: Stack) -> None:
    endpoint, model = endpoint_name(), registered_model(loop_stack)
    blue = deploy(endpoint, "blue", model)
    send(loop_stack, blue)
    routed(loop_stack, DONE, blue.id)

    green = deploy(endpoint, "green", model, traffic=0)
    send(loop_stack, green)
    result = routed(loop_stack, DONE, green.id).extra["result"]
    assert result["traffic"] == {"blue": 100}  # green is ready and serves nothing yet

    shift = operation({"kind": "set_traffic", "endpoint": endpoint,
                       "traffic": {"blue": 10, "green": 90}}, task="shift")  # fmt: skip
    send(loop_stack, shift)
    shifted = routed(loop_stack, DONE, shift.id)
    assert shifted.extra["operation"] == "set_traffic"
    assert shifted.extra["result"]["traffic"] == {"blue": 10, "green": 90}
    stored = loop_stack.emulator.online.endpoint(endpoint)
    assert stored is not None and stored["properties"]["traffic"] == {"blue": 10, "green": 90}


def test_a_deployment_that_fails_in_azure_ml_reaches_the_failure_route(loop_stack: Stack) -> None:
    endpoint, model = endpoint_name(), registered_model(loop_stack)
    loop_stack.emulator.online.fail_deployment(endpoint, "blue", "ResourceNotReady: no quota")
    blue = deploy(endpoint, "blue", model)
    send(loop_stack, blue)
    event = routed(loop_stack, FAILED, blue.id)
    assert event.extra["status"] == "Failed"
    assert f"deployment {endpoint}/blue is Failed" in event.extra["reason"]
    assert events_of(loop_stack, DONE, blue.id) == []


@pytest.mark.parametrize(
    ("fields", "tags", "rule"),
    [
        ({"instance_type": "Standard_NC24ads_A100_v4"}, None, "instance type"),
        ({"instance_count": 9}, None, "instance_count 9 exceeds the maximum 4"),
        ({}, {"evaluation": "failed"}, "the policy requires 'passed'"),
    ],
)
def test_a_deployment_the_policy_refuses_names_the_rule_and_writes_nothing(
    loop_stack: Stack, fields: dict[str, Any], tags: dict[str, str] | None, rule: str
) -> None:
    endpoint, model = endpoint_name(), registered_model(loop_stack, tags)
    refused = deploy(endpoint, "blue", model, **fields)
    send(loop_stack, refused)
    event = routed(loop_stack, FAILED, refused.id)
    assert event.extra["reason"].startswith("policy:") and rule in event.extra["reason"]
    assert online_writes(loop_stack, endpoint) == []


def test_a_deployment_whose_arm_events_never_come_completes_through_the_sweep(
    loop_stack: Stack,
) -> None:
    import dataclasses

    emulator = loop_stack.emulator
    before = emulator.profile
    emulator.profile = dataclasses.replace(before, arm_events="none")
    try:
        endpoint, model = endpoint_name(), registered_model(loop_stack)
        blue = deploy(endpoint, "blue", model)
        send(loop_stack, blue)
        event = routed(loop_stack, DONE, blue.id, timeout=90)
    finally:
        emulator.profile = before
    assert event.extra["via"] == "reconcile" and event.extra["result"]["traffic"] == {"blue": 100}


def test_deployments_converge_when_arm_events_come_at_the_start(loop_stack: Stack) -> None:
    """The observed profile: two Success events as each write is accepted, none at the end."""
    from bridge.local.azureml.profiles import OBSERVED

    emulator = loop_stack.emulator
    before = emulator.profile
    emulator.profile = OBSERVED
    try:
        endpoint, model = endpoint_name(), registered_model(loop_stack)
        blue = deploy(endpoint, "blue", model)
        send(loop_stack, blue)
        event = routed(loop_stack, DONE, blue.id, timeout=90)
    finally:
        emulator.profile = before
    assert event.extra["result"]["traffic"] == {"blue": 100}


# --- batch_score ----------------------------------------------------------------------------------


def test_a_batch_scoring_job_reaches_airflow_with_its_outputs(loop_stack: Stack) -> None:
    endpoint = endpoint_name("batch")
    loop_stack.emulator.batch.add_endpoint(endpoint, deployments=("default", "broken"),
                                           failing=("broken",))  # fmt: skip
    score = operation({
        "kind": "batch_score", "endpoint": endpoint,
        "inputs": {"data": {"type": "uri_folder", "path": "azureml://datastores/blob/paths/in/"}},
    }, task="score")  # fmt: skip
    send(loop_stack, score)
    event = routed(loop_stack, DONE, score.id)
    assert event.extra["operation"] == "batch_score" and event.extra["status"] == "Completed"
    assert event.extra["result"] == {"endpoint": endpoint, "deployment": None, "job": score.id}
    assert event.extra["outputs"]["score"]["uri"]
    job = loop_stack.emulator.job(score.id)
    assert job is not None and job.status == "Completed"

    broken = operation({"kind": "batch_score", "endpoint": endpoint, "deployment": "broken"},
                       task="score-broken")  # fmt: skip
    send(loop_stack, broken)
    failed = routed(loop_stack, FAILED, broken.id)
    assert failed.extra["status"] == "Failed"


# --- share_model ----------------------------------------------------------------------------------


def test_a_model_shared_to_a_registry_reaches_airflow_once(loop_stack: Stack) -> None:
    loop_stack.emulator.registries.add("loop-registry")
    model = registered_model(loop_stack)
    name, version = model.split(":")
    share = operation({"kind": "share_model", "name": name, "version": version,
                       "registry": "loop-registry"}, task="promote")  # fmt: skip
    send(loop_stack, share)
    event = routed(loop_stack, DONE, share.id)
    result = event.extra["result"]
    assert result["model"] == f"azureml://registries/loop-registry/models/{name}/versions/1"
    assert loop_stack.emulator.registries.get("loop-registry", name, "1") is not None

    refused = operation({"kind": "share_model", "name": name, "version": version,
                         "registry": "someone-elses"}, task="promote-elsewhere")  # fmt: skip
    send(loop_stack, refused)
    reason = routed(loop_stack, FAILED, refused.id).extra["reason"]
    assert "policy:" in reason and "registry 'someone-elses' is not allowed" in reason


# --- under a lossy Event Grid ---------------------------------------------------------------------


def test_under_lossy_events_every_operation_reaches_airflow_exactly_once(loop_stack: Stack) -> None:
    """Events dropped, doubled and overtaken (the lossy profile): each outcome still reaches its
    asset once, found by an event or by the sweep."""
    from bridge.local.azureml.profiles import LOSSY

    emulator = loop_stack.emulator
    before = emulator.profile
    emulator.profile = LOSSY
    try:
        endpoint, model = endpoint_name(), registered_model(loop_stack)
        batch = endpoint_name("batch")
        emulator.batch.add_endpoint(batch)
        name = f"loop-{secrets.token_hex(4)}"
        submissions = [
            deploy(endpoint, "blue", model),
            operation({"kind": "batch_score", "endpoint": batch}, task="score"),
            operation({"kind": "register_model", "name": name,
                       "path": "azureml://datastores/blob/paths/m/"}, task="register"),
        ]  # fmt: skip
        for submission in submissions:
            send(loop_stack, submission)
        for submission in submissions:
            routed(loop_stack, DONE, submission.id, timeout=90)
        # Then what builds on them: a second deployment's traffic, the share, a cancel.
        emulator.registries.add("loop-registry")
        origin = {"dag_id": "loop_lifecycle", "run_id": secrets.token_hex(6), "task_id": "long"}
        long_job = Submission.model_validate({
            "origin": origin,
            "job": {"command": "sleep 300", "environment": "azureml:loop-env:1",
                    "compute": "cpu-cluster", "experiment_name": "loop"},
        })  # fmt: skip
        send(loop_stack, long_job)
        emulator.wait_for_status(long_job.id, ["Running"], timeout=30)
        then = [
            operation({"kind": "set_traffic", "endpoint": endpoint, "traffic": {"blue": 100}},
                      task="shift"),
            operation({"kind": "share_model", "name": name, "version": "1",
                       "registry": "loop-registry"}, task="share"),
            operation({"kind": "cancel", "job": long_job.id}, task="cancel"),
        ]  # fmt: skip
        for submission in then:
            send(loop_stack, submission)
        for submission in then:
            routed(loop_stack, DONE, submission.id, timeout=90)
        submissions += then
        # Late duplicates and the sweep have had their chance: still one event each.
        eventually(lambda: len(emulator.settled_events(len(emulator.events), 20)) or None)
    finally:
        emulator.profile = before
    for submission in submissions:
        assert len(events_of(loop_stack, DONE, submission.id)) == 1
        assert events_of(loop_stack, FAILED, submission.id) == []


# --- every kind: refused by the policy, failed in Azure ML ----------------------------------------


@pytest.mark.parametrize(
    "work",
    [
        {"kind": "set_traffic", "endpoint": "ep-any", "traffic": {"blue": 100}},
        {"kind": "batch_score", "endpoint": "batch-any"},
        {"kind": "cancel", "job": "any-job-airflow"},
        {"kind": "share_model", "name": "loop-x", "version": "1", "registry": "loop-registry"},
        {
            "kind": "deploy",
            "endpoint": "ep-any",
            "deployment": "blue",
            "model": "loop-x:1",
            "instance_type": "Standard_DS3_v2",
        },
    ],
    ids=lambda work: str(work["kind"]),
)
def test_every_kind_the_policy_refuses_reaches_the_failure_route_naming_the_rule(
    loop_stack: Stack, work: dict[str, Any]
) -> None:
    """A bridge whose policy allows registrations only: the real service, its own ledger."""
    from bridge.composition import build

    settings = own_ledger(
        loop_stack, "policy", policy_json='{"allowed_operations": ["register_model"]}'
    )
    bridge = build(settings)
    refused = operation(work, task=f"refused-{work['kind']}")
    before = len(loop_stack.emulator.requests)
    report = bridge.submit(refused.to_json().encode(), f"msg-{refused.id}")
    assert report.result is Result.REJECTED
    assert f"operation {work['kind']!r} is not allowed" in report.detail
    [event] = events_of(loop_stack, FAILED, refused.id)
    assert event.extra["operation"] == work["kind"] and event.extra["status"] == "Rejected"
    assert loop_stack.emulator.requests[before:] == []  # nothing reached Azure ML


def test_a_traffic_change_that_fails_in_azure_ml_reaches_the_failure_route(
    loop_stack: Stack,
) -> None:
    endpoint, model = endpoint_name(), registered_model(loop_stack)
    blue = deploy(endpoint, "blue", model)
    send(loop_stack, blue)
    routed(loop_stack, DONE, blue.id)
    loop_stack.emulator.online.fail_endpoint(endpoint, "InternalServerError: routing failed")
    shift = operation({"kind": "set_traffic", "endpoint": endpoint, "traffic": {"blue": 100}},
                      task="shift-fails")  # fmt: skip
    send(loop_stack, shift)
    event = routed(loop_stack, FAILED, shift.id)
    assert (
        event.extra["status"] == "Failed"
        and f"endpoint {endpoint} is Failed" in event.extra["reason"]
    )


def test_a_cancel_of_a_job_azure_ml_no_longer_has_fails(loop_stack: Stack) -> None:
    """Deleted in the workspace before anyone looked (on the loop stack the sweep would find it
    missing first, and the cancel would report it ended): a bridge of its own, no sweep."""
    from bridge.composition import build

    bridge = build(own_ledger(loop_stack, "cancel"))
    origin = {"dag_id": "loop_lifecycle", "run_id": secrets.token_hex(6), "task_id": "gone"}
    job = Submission.model_validate({
        "origin": origin,
        "job": {"command": "sleep 300", "environment": "azureml:loop-env:1",
                "compute": "cpu-cluster", "experiment_name": "loop"},
    })  # fmt: skip
    assert bridge.submit(job.to_json().encode(), f"msg-{job.id}").result is Result.CREATED
    loop_stack.emulator.forget(job.id)
    cancel = operation({"kind": "cancel", "job": job.id}, task="stop-gone")
    report = bridge.submit(cancel.to_json().encode(), f"msg-{cancel.id}")
    assert report.result is Result.REJECTED
    assert "Azure ML refused the cancel" in report.detail and "404" in report.detail
    [event] = events_of(loop_stack, FAILED, cancel.id)
    assert event.extra["operation"] == "cancel"


def test_a_share_of_a_model_not_registered_yet_waits_for_it(loop_stack: Stack) -> None:
    """The registration may still be on its way: it blocks and heals, as a deployment does."""
    loop_stack.emulator.registries.add("loop-registry")
    name = f"loop-{secrets.token_hex(4)}"
    share = operation({"kind": "share_model", "name": name, "version": "1",
                       "registry": "loop-registry"}, task="promote-early")  # fmt: skip
    send(loop_stack, share)
    record = blocked_with(loop_stack, share.id, f"model {name}:1 is not registered")
    assert "[missing-resource]" in (record.blocked or "")
    assert loop_stack.emulator.registries.get("loop-registry", name, "1") is None

    register = operation({"kind": "register_model", "name": name, "version": "1",
                          "path": "azureml://datastores/workspaceblobstore/paths/m/"})  # fmt: skip
    send(loop_stack, register)
    routed(loop_stack, DONE, register.id)
    event = routed(loop_stack, DONE, share.id)
    assert event.extra["result"]["model"] == (
        f"azureml://registries/loop-registry/models/{name}/versions/1"
    )
    assert events_of(loop_stack, FAILED, share.id) == []
