"""Online endpoints and deployments through the azure-ai-ml adapter against the Azure ML emulator:
what the SDK really sends, that a write is started and not waited for, how its outcome reads, and
the resource write and ModelRegistered events each emulator profile publishes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.azureml import AzureMLJobs
from bridge.errors import BlockedError, PermanentError, TransientError
from bridge.events import (
    MODEL_REGISTERED,
    RESOURCE_WRITE_FAILURE,
    RESOURCE_WRITE_SUCCESS,
)
from bridge.local.azureml import DOCUMENTED, LOSSY, OBSERVED, AzureMLEmulator, Profile
from bridge.operations import Deploy, RegisterModel
from tests.integration.test_azureml_adapter import WORKSPACE_ID, jobs_of

pytestmark = pytest.mark.integration

ONLINE_SECONDS = 0.3
ENDPOINTS = f"{WORKSPACE_ID}/onlineEndpoints"
RESOURCE_GROUP_ID = WORKSPACE_ID.split("/providers/")[0]
BRIDGE_TAGS = {"bridge-submission": "s-1", "bridge-signature": "sig"}


def emulator_with(tmp_path: Path, profile: Profile = DOCUMENTED, **options: Any) -> AzureMLEmulator:
    return AzureMLEmulator(tmp_path, profile=profile, online_seconds=ONLINE_SECONDS, **options)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AzureMLEmulator]:
    with emulator_with(tmp_path) as emulator:
        yield emulator


@pytest.fixture
def jobs(emulator: AzureMLEmulator) -> AzureMLJobs:
    return jobs_of(emulator)


def deploy(**fields: Any) -> Deploy:
    return Deploy.model_validate({
        "endpoint": "churn-api", "deployment": "blue", "model": "churn:3",
        "instance_type": "Standard_DS3_v2", "instance_count": 2, **fields,
    })  # fmt: skip


def register(jobs: AzureMLJobs, name: str = "churn", version: str = "3") -> None:
    path = "azureml://datastores/blob/paths/m/"
    tags, properties = {"auc": "0.91"}, {"stage": "candidate"}
    registration = RegisterModel(name=name, path=path, tags=tags, properties=properties)
    jobs.register_model(registration, version, {})


def live_endpoint(emulator: AzureMLEmulator, jobs: AzureMLJobs, name: str = "churn-api") -> None:
    jobs.start_endpoint(name, BRIDGE_TAGS)
    assert emulator.online.wait_for(name) == "Succeeded"


def live_deployment(emulator: AzureMLEmulator, jobs: AzureMLJobs, **fields: Any) -> Deploy:
    register(jobs)
    live_endpoint(emulator, jobs)
    wanted = deploy(**fields)
    jobs.start_deployment(wanted, BRIDGE_TAGS)
    assert emulator.online.wait_for(wanted.endpoint, wanted.deployment) == "Succeeded"
    return wanted


def sent(emulator: AzureMLEmulator, since: int = 0) -> list[tuple[str, str]]:
    return [(r.method, r.path.removeprefix(WORKSPACE_ID) or "/")
            for r in emulator.requests[since:]]  # fmt: skip


def operation_reads(emulator: AzureMLEmulator) -> int:
    return sum("mfeOperationsStatus" in r.path for r in emulator.requests)


def resource_writes(emulator: AzureMLEmulator) -> list[dict[str, Any]]:
    return [d.event for d in emulator.events if d.event.get("topic") == RESOURCE_GROUP_ID
            or d.event.get("source") == RESOURCE_GROUP_ID]  # fmt: skip


# -- what the SDK sends ---------------------------------------------------------------------------


def test_a_new_endpoint_is_one_put_with_key_auth_answered_while_creating(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    jobs.start_endpoint("churn-api", BRIDGE_TAGS)

    assert sent(emulator) == [
        ("GET", "/onlineEndpoints/churn-api"),  # 404: a new endpoint
        ("GET", "/"),  # the workspace, for its location
        ("PUT", "/onlineEndpoints/churn-api"),
    ]
    put = emulator.requests[-1]
    assert put.query["api-version"] == "2022-02-01-preview"
    assert put.body["properties"]["authMode"] == "Key"
    assert put.body["properties"]["traffic"] == {}
    assert put.body["tags"] == BRIDGE_TAGS
    assert put.body["location"] == "local"
    creating = jobs.online_endpoint("churn-api")
    assert creating is not None and creating.state == "Creating"
    assert emulator.online.wait_for("churn-api") == "Succeeded"
    ready = jobs.online_endpoint("churn-api")
    assert ready is not None and ready.state == "Succeeded"
    assert ready.scoring_uri == "https://churn-api.local.inference.ml.azure.com/score"
    assert ready.tags == BRIDGE_TAGS and ready.traffic == {}


def test_a_deployment_is_one_put_naming_its_assets_by_arm_id_as_the_sdk_does(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment

    register(jobs)
    live_endpoint(emulator, jobs)
    before = len(emulator.requests)
    wanted = deploy(environment="azureml:sklearn:7", code="azureml:score:1",
                    scoring_script="score.py", tags={"team": "ml"})  # fmt: skip

    jobs.start_deployment(wanted, BRIDGE_TAGS)

    # No GET of the model (nor of the endpoint, whose absence the PUT itself answers with 404).
    assert sent(emulator, before) == [
        ("GET", "/"),
        ("PUT", "/onlineEndpoints/churn-api/deployments/blue"),
    ]
    put = emulator.requests[-1]
    assert put.query["api-version"] == "2023-04-01-preview"
    properties = put.body["properties"]
    assert properties["model"] == f"{WORKSPACE_ID}/models/churn/versions/3"
    assert properties["environmentId"] == f"{WORKSPACE_ID}/environments/sklearn/versions/7"
    assert properties["codeConfiguration"] == {
        "codeId": f"{WORKSPACE_ID}/codes/score/versions/1",
        "scoringScript": "score.py",
    }
    assert properties["instanceType"] == "Standard_DS3_v2"
    assert put.body["sku"] == {"name": "Default", "capacity": 2}
    assert put.body["tags"] == {"team": "ml", **BRIDGE_TAGS}

    # azure-ai-ml's own begin_create_or_update sends the very same body (and then polls).
    sdk = ManagedOnlineDeployment(
        name="green", endpoint_name="churn-api", model="azureml:churn:3",
        instance_type="Standard_DS3_v2", instance_count=2, environment="azureml:sklearn:7",
        code_configuration=CodeConfiguration(code="azureml:score:1", scoring_script="score.py"),
        tags={"team": "ml", **BRIDGE_TAGS},
    )  # fmt: skip
    jobs._ml_client().online_deployments.begin_create_or_update(sdk).result()
    [sdk_put] = [r for r in emulator.requests if r.path.endswith("/deployments/green")
                 and r.method == "PUT"]  # fmt: skip
    assert sdk_put.body == put.body
    assert sdk_put.query == put.query


def test_a_registry_model_is_deployed_by_its_registry_reference_as_given(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    """A production workspace deploys the copy `share_model` put in a registry."""
    live_endpoint(emulator, jobs)
    shared = "azureml://registries/prod-registry/models/churn/versions/3"
    jobs.start_deployment(deploy(model=shared), BRIDGE_TAGS)
    put = emulator.requests[-1]
    assert put.path.endswith("/deployments/blue") and put.body["properties"]["model"] == shared


def test_start_returns_once_accepted_and_leaves_no_poller(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    register(jobs)
    started = time.monotonic()
    jobs.start_endpoint("churn-api", {})
    assert time.monotonic() - started < ONLINE_SECONDS
    emulator.online.wait_for("churn-api")
    jobs.start_deployment(deploy(), {})
    jobs.start_traffic("churn-api", {}, {})

    last_start = time.monotonic()
    assert not [t for t in threading.enumerate() if t.name.startswith("LROPoller")]
    emulator.online.wait_for("churn-api", "blue")
    requests = len(emulator.requests)
    # Past the operation's Retry-After (1 s): a poller would have read its status by now.
    time.sleep(max(0.0, last_start + 1.1 - time.monotonic()))
    assert operation_reads(emulator) == 0
    assert len(emulator.requests) == requests


# -- outcomes -------------------------------------------------------------------------------------


def test_a_deployment_goes_from_creating_to_succeeded(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    register(jobs)
    live_endpoint(emulator, jobs)
    jobs.start_deployment(deploy(tags={"team": "ml"}), BRIDGE_TAGS)

    creating = jobs.online_deployment("churn-api", "blue")
    assert creating is not None and creating.state == "Creating"
    assert emulator.online.wait_for("churn-api", "blue") == "Succeeded"
    ready = jobs.online_deployment("churn-api", "blue")
    assert ready is not None
    assert (ready.name, ready.state, ready.error) == ("blue", "Succeeded", None)
    assert ready.tags == {"team": "ml", **BRIDGE_TAGS}
    # A second write of the same deployment is an update.
    jobs.start_deployment(deploy(instance_count=3), BRIDGE_TAGS)
    updating = jobs.online_deployment("churn-api", "blue")
    assert updating is not None and updating.state == "Updating"


def test_a_deployment_of_a_model_the_workspace_lacks_fails_with_the_reason(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    live_endpoint(emulator, jobs)
    jobs.start_deployment(deploy(model="churn:9"), {})  # accepted: ARM resolves it later

    assert emulator.online.wait_for("churn-api", "blue") == "Failed"
    failed = jobs.online_deployment("churn-api", "blue")
    assert failed is not None and failed.state == "Failed"
    assert failed.error is not None and "Model churn:9 was not found" in failed.error
    assert sent(emulator)[-1] == ("POST", "/onlineEndpoints/churn-api/deployments/blue/getLogs")


def test_an_injected_failure_ends_the_next_write_failed_with_its_message(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    register(jobs)
    live_endpoint(emulator, jobs)
    emulator.online.fail_deployment("churn-api", "blue", "quota exceeded for Standard_DS3_v2")
    jobs.start_deployment(deploy(), {})

    assert emulator.online.wait_for("churn-api", "blue") == "Failed"
    failed = jobs.online_deployment("churn-api", "blue")
    assert failed is not None and failed.error is not None
    assert "quota exceeded for Standard_DS3_v2" in failed.error
    jobs.start_deployment(deploy(), {})  # only the next write
    assert emulator.online.wait_for("churn-api", "blue", {"Succeeded", "Failed"}) == "Succeeded"


def test_a_resource_that_does_not_exist_reads_none(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    assert jobs.online_endpoint("churn-api") is None
    assert jobs.online_deployment("churn-api", "blue") is None
    live_endpoint(emulator, jobs)
    assert jobs.online_deployment("churn-api", "blue") is None


def test_a_deployment_on_a_missing_endpoint_is_permanent(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    with pytest.raises(PermanentError, match="404"):
        jobs.start_deployment(deploy(), {})
    assert emulator.online.deployment("churn-api", "blue") is None


# -- traffic --------------------------------------------------------------------------------------


def test_traffic_is_a_full_put_of_the_endpoint_with_tags_added(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    live_deployment(emulator, jobs)
    before = len(emulator.requests)

    jobs.start_traffic("churn-api", {"blue": 100}, {"bridge-traffic": "s-2"})

    assert sent(emulator, before) == [
        ("GET", "/onlineEndpoints/churn-api"),
        ("GET", "/onlineEndpoints/churn-api/deployments"),
        ("PUT", "/onlineEndpoints/churn-api"),
    ]
    put = emulator.requests[-1].body
    assert put["properties"]["traffic"] == {"blue": 100}
    assert put["properties"]["authMode"] == "Key"
    assert put["tags"] == {**BRIDGE_TAGS, "bridge-traffic": "s-2"}
    updating = jobs.online_endpoint("churn-api")
    assert updating is not None and updating.state == "Updating"
    assert emulator.online.wait_for("churn-api") == "Succeeded"
    ready = jobs.online_endpoint("churn-api")
    assert ready is not None and ready.traffic == {"blue": 100}
    # Writing the endpoint again (a resent deploy) keeps its traffic.
    jobs.start_endpoint("churn-api", {})
    assert emulator.requests[-1].body["properties"]["traffic"] == {"blue": 100}


def test_traffic_to_a_deployment_the_endpoint_lacks_is_permanent(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    live_endpoint(emulator, jobs)
    with pytest.raises(PermanentError, match=r"400.*green"):
        jobs.start_traffic("churn-api", {"green": 100}, {})
    found = jobs.online_endpoint("churn-api")
    assert found is not None and (found.state, found.traffic) == ("Succeeded", {})


# -- failures of the calls themselves -------------------------------------------------------------


def test_a_write_refused_for_a_missing_role_blocks(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(403)
    with pytest.raises(BlockedError) as blocked:
        jobs.start_endpoint("churn-api", {})
    assert blocked.value.cause == BlockedError.PERMISSION
    assert emulator.online.endpoint("churn-api") is None


def test_a_throttled_read_is_transient(emulator: AzureMLEmulator, jobs: AzureMLJobs) -> None:
    emulator.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as throttled:
        jobs.online_deployment("churn-api", "blue")
    assert throttled.value.retry_after == 7


# -- events, by profile ---------------------------------------------------------------------------


def test_documented_raises_one_write_event_per_outcome_when_the_write_ends(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    live_endpoint(emulator, jobs)
    jobs.start_deployment(deploy(model="churn:9"), {})
    emulator.online.wait_for("churn-api", "blue")

    endpoint, deployment = resource_writes(emulator)  # published as each write ended
    assert endpoint["eventType"] == RESOURCE_WRITE_SUCCESS
    assert deployment["eventType"] == RESOURCE_WRITE_FAILURE
    assert deployment["topic"] == RESOURCE_GROUP_ID
    assert deployment["subject"] == f"{ENDPOINTS}/churn-api/deployments/blue"
    assert (deployment["dataVersion"], deployment["metadataVersion"]) == ("2", "1")
    data = deployment["data"]
    assert data["operationName"] == (
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/write"
    )
    assert data["resourceUri"] == deployment["subject"]
    assert data["status"] == "Failed"
    assert data["resourceProvider"] == "Microsoft.MachineLearningServices"
    assert data["subscriptionId"] == AzureMLEmulator.SUBSCRIPTION_ID
    assert data["correlationId"] != endpoint["data"]["correlationId"]
    assert {"authorization", "claims", "tenantId"} <= data.keys()
    assert endpoint["data"]["operationName"].endswith("/workspaces/onlineEndpoints/write")


def test_observed_raises_two_successes_as_the_write_is_accepted_and_none_at_its_end(
    tmp_path: Path,
) -> None:
    with emulator_with(tmp_path, OBSERVED) as emulator:
        jobs = jobs_of(emulator)
        emulator.online.fail_endpoint("churn-api", "capacity")
        jobs.start_endpoint("churn-api", {})
        accepted = resource_writes(emulator)
        assert emulator.online.wait_for("churn-api") == "Failed"
        time.sleep(0.1)
        assert resource_writes(emulator) == accepted  # nothing at the end, not even a Failure
    assert [e["eventType"] for e in accepted] == [RESOURCE_WRITE_SUCCESS] * 2
    assert len({e["data"]["correlationId"] for e in accepted}) == 1
    assert len({e["id"] for e in accepted}) == 2


def test_lossy_publishes_documented_write_events_through_its_losses(tmp_path: Path) -> None:
    assert (LOSSY.arm_events, LOSSY.arm_events_per_write) == ("completion", 1)
    with emulator_with(tmp_path, LOSSY) as emulator:
        jobs = jobs_of(emulator)
        for name in ("churn-a", "churn-b", "churn-c", "churn-d"):
            jobs.start_endpoint(name, {})
        for name in ("churn-a", "churn-b", "churn-c", "churn-d"):
            emulator.online.wait_for(name)
        time.sleep(0.1)
        published = [d for d in emulator.events if d.fault != "duplicate"]
    assert len(published) == 4
    assert all(d.event["eventType"] == RESOURCE_WRITE_SUCCESS for d in published)


def test_write_events_as_cloudevents_name_the_resource_group_as_source(tmp_path: Path) -> None:
    with emulator_with(tmp_path, event_schema="cloudevents") as emulator:
        live_endpoint(emulator, jobs_of(emulator))
        time.sleep(0.05)
        [event] = resource_writes(emulator)
    assert event["specversion"] == "1.0" and event["type"] == RESOURCE_WRITE_SUCCESS
    assert event["source"] == RESOURCE_GROUP_ID
    assert event["subject"] == f"{ENDPOINTS}/churn-api"


@pytest.mark.parametrize("profile", [DOCUMENTED, OBSERVED], ids=lambda p: p.name)
def test_model_registered_takes_the_profiles_shape(tmp_path: Path, profile: Profile) -> None:
    with emulator_with(tmp_path, profile) as emulator:
        register(jobs_of(emulator), version="20")
        [event] = [d.event for d in emulator.events if d.event["eventType"] == MODEL_REGISTERED]
    assert event["topic"] == WORKSPACE_ID
    assert event["subject"] == "models/churn:20"
    if profile is DOCUMENTED:  # the docs page's example
        assert event["data"] == {"ModelName": "churn", "ModelVersion": 20,
                                 "ModelTags": {"auc": "0.91"},
                                 "ModelProperties": {"stage": "candidate"}}  # fmt: skip
        assert event["dataVersion"] == ""
    else:  # the SDK test suites' payload
        assert event["data"] == {"modelName": "churn", "modelVersion": "20",
                                 "modelTags": {"auc": "0.91"},
                                 "modelProperties": {"stage": "candidate"}}  # fmt: skip
        assert event["dataVersion"] == "2" and event["eventTime"].endswith("+00:00")
