"""Batch scoring and sharing to a registry, through the azure-ai-ml adapter against the Azure ML
emulator: what the SDK really sends, the job an invocation starts, and what a share leaves in the
registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.azureml import AzureMLJobs
from bridge.contracts import TAG_SIGNATURE, TAG_SUBMISSION
from bridge.errors import BlockedError, PermanentError
from bridge.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from bridge.local.azureml import AzureMLEmulator
from bridge.local.credential import LocalCredential
from bridge.operations import BatchScore, RegisterModel, ShareModel

pytestmark = pytest.mark.integration

WORKSPACE_ID = (
    f"/subscriptions/{AzureMLEmulator.SUBSCRIPTION_ID}/resourceGroups/"
    f"{AzureMLEmulator.RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/"
    f"workspaces/{AzureMLEmulator.WORKSPACE}"
)
REGISTRY_HOST = (
    f"/mferp/managementfrontend/subscriptions/{AzureMLEmulator.SUBSCRIPTION_ID}/resourceGroups/"
    "bridge-registries/providers/Microsoft.MachineLearningServices/registries/shared"
)
JOB = "scoring-2025-01-01-airflow"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AzureMLEmulator]:
    with AzureMLEmulator(tmp_path) as emulator:
        emulator.batch.add_endpoint("scorer", deployments=("blue", "red"), failing=("red",))
        emulator.registries.add("shared")
        yield emulator


@pytest.fixture
def azureml(emulator: AzureMLEmulator) -> AzureMLJobs:
    return AzureMLJobs(
        subscription_id=AzureMLEmulator.SUBSCRIPTION_ID,
        resource_group=AzureMLEmulator.RESOURCE_GROUP,
        workspace=AzureMLEmulator.WORKSPACE,
        credential=LocalCredential(),
        endpoint=emulator.endpoint,
        ca_file=str(emulator.authority),
    )


def score(**fields: Any) -> BatchScore:
    return BatchScore.model_validate({"endpoint": "scorer", **fields})


def sent(emulator: AzureMLEmulator) -> list[tuple[str, str, str | None]]:
    return [
        (r.method, r.path.removeprefix(WORKSPACE_ID), r.query.get("api-version"))
        for r in emulator.requests
    ]


# --- batch endpoints ------------------------------------------------------------------------------


def test_an_invocation_reads_the_endpoint_then_posts_the_job_to_its_scoring_uri(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    data = {"type": "uri_folder", "path": "azureml://datastores/blob/paths/in/"}
    created = azureml.batch_score(
        score(deployment="blue", inputs={"data": data, "limit": 3}, experiment_name="nightly"),
        JOB,
    )

    assert created.name == JOB
    assert created.studio_url is not None and JOB in created.studio_url
    assert created.outputs["score"].uri is not None
    assert sent(emulator)[:3] == [
        ("GET", "/batchEndpoints/scorer/deployments", "2023-10-01"),  # the named deployment
        ("GET", "/batchEndpoints/scorer", "2023-10-01"),
        ("POST", "/inference/batchEndpoints/scorer/jobs", None),  # the endpoint's scoringUri
    ]
    assert sent(emulator)[3][:2] == ("GET", f"/jobs/{JOB}")  # its Studio URL and outputs
    assert len(emulator.requests) == 4
    assert emulator.requests[2].body == {"properties": {
        "name": JOB, "properties": {"experimentName": "nightly"},
        "inputData": {"data": {"jobInputType": "UriFolder",
                               "uri": "azureml://datastores/blob/paths/in/"}, "limit": 3},
    }}  # fmt: skip
    [invocation] = emulator.batch.invocations
    assert invocation.deployment == "blue"
    assert invocation.repeatability_id
    # A token for Azure ML's audience: the cloud's aml_resource_id, here the emulator itself.
    assert invocation.audience == emulator.endpoint.rstrip("/")


def test_the_invocation_runs_a_pipeline_job_of_that_name_with_its_outputs(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    azureml.batch_score(score(inputs={"data": {"path": "azureml://datastores/b/paths/x/"}}), JOB)

    assert emulator.wait_for_status(JOB, ["Completed", "Failed"], 5) == "Completed"
    found = azureml.find(JOB)
    assert found is not None and found.status == "Completed"
    assert found.outputs["score"].uri == (
        f"azureml://datastores/workspaceblobstore/paths/scorer/{JOB}/score/"
    )
    job = emulator.job(JOB)
    assert job is not None and job.job_type == "Pipeline"
    assert job.experiment_name == "scorer"  # no experiment given: the endpoint's name
    assert job.properties["inputs"]["data"]["jobInputType"] == "uri_folder"
    assert job.properties["properties"]["azureml.deploymentname"] == "blue"  # the default


def test_the_jobs_run_events_are_published_without_the_bridges_tags(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    azureml.batch_score(score(), JOB)

    events = [delivery.event for delivery in emulator.settled_events(3, timeout=5)]
    assert [e["eventType"] for e in events] == [RUN_STATUS_CHANGED] * 2 + [RUN_COMPLETED]
    assert {e["subject"].rsplit("/", 1)[-1] for e in events} == {JOB}
    for event in events:
        tags = event["data"]["runTags"]
        assert TAG_SUBMISSION not in tags and TAG_SIGNATURE not in tags


def test_a_failing_deployment_ends_its_job_failed(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    azureml.batch_score(score(deployment="red"), JOB)

    assert emulator.wait_for_status(JOB, ["Completed", "Failed"], 5) == "Failed"
    events = [delivery.event for delivery in emulator.settled_events(2, timeout=5)]
    assert [e["data"].get("runStatus") for e in events] == ["Running", "Failed"]


def test_a_deployment_named_once_is_not_sent_with_the_next_invocation(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    # azure-ai-ml keeps invocation headers in one process-wide dict; the adapter clears them.
    azureml.batch_score(score(deployment="red"), "first-airflow")
    azureml.batch_score(score(), "second-airflow")

    assert [i.deployment for i in emulator.batch.invocations] == ["red", None]
    assert emulator.wait_for_status("second-airflow", ["Completed", "Failed"], 5) == "Completed"


def test_a_resent_invocation_returns_the_job_it_started(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    azureml.batch_score(score(), JOB)
    again = azureml.batch_score(score(), JOB)

    assert again.name == JOB
    assert [r.method for r in emulator.requests].count("POST") == 2  # the second one refused 409
    assert sent(emulator)[-1][:2] == ("GET", f"/jobs/{JOB}")  # the existing job is the answer
    assert len(emulator.batch.invocations) == 2 and len(emulator.events) <= 3  # one job ran


def test_an_unknown_endpoint_or_deployment_is_permanent(azureml: AzureMLJobs) -> None:
    with pytest.raises(PermanentError, match="404"):
        azureml.batch_score(score(endpoint="nowhere"), JOB)
    with pytest.raises(PermanentError, match="Deployment name green not found"):
        azureml.batch_score(score(deployment="green"), JOB)


def test_an_invocation_refused_for_a_missing_role_blocks_and_starts_nothing(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    emulator.fail_next(403, body={"error": {"code": "AuthorizationFailed", "message": "no"}})
    with pytest.raises(BlockedError) as raised:
        azureml.batch_score(score(), JOB)
    assert raised.value.cause == BlockedError.PERMISSION
    assert emulator.job(JOB) is None


# --- registries -----------------------------------------------------------------------------------


def register(azureml: AzureMLJobs, version: str = "3") -> None:
    registration = RegisterModel.model_validate(
        {"name": "churn", "path": "azureml://datastores/d/paths/m/", "tags": {"auc": "0.91"}}
    )
    azureml.register_model(registration, version, {TAG_SUBMISSION: "register-airflow"})


def share(**fields: Any) -> ShareModel:
    return ShareModel.model_validate(
        {"name": "churn", "version": "3", "registry": "shared", **fields}
    )


def test_a_share_discovers_the_registry_checks_the_target_imports_and_reads_the_copy(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    register(azureml)
    emulator.requests.clear()

    shared = azureml.share_model(share(share_name="churn-prod", share_version="1"), {})

    assert shared.id == "azureml://registries/shared/models/churn-prod/versions/1"
    assert (shared.name, shared.version) == ("churn-prod", "1")
    assert shared.tags == {"auc": "0.91", TAG_SUBMISSION: "register-airflow"}  # the source's
    data_plane = "2021-10-01-dataplanepreview"
    asked = [(m, p.removeprefix(REGISTRY_HOST), v) for m, p, v in sent(emulator)]
    operation = asked[5][1]
    assert "/locations/local/registryOperations/" in operation  # the import's Location, polled
    assert asked == [
        ("GET", "", "2023-08-01-preview"),  # the workspace: its GUID and location name the source
        ("GET", "/registrymanagement/v1.0/registries/shared/discovery", "v1.0"),
        ("GET", "/models/churn-prod/versions", data_plane),  # the SDK's newest-version check
        ("GET", "/models/churn-prod/versions/1", data_plane),  # the target: 404 expected
        ("POST", "/import", data_plane),
        ("GET", operation, data_plane),
        ("GET", "/models/churn-prod/versions/1", data_plane),  # the copy
    ]
    assert emulator.requests[4].body["properties"] == {
        "referenceType": "Id", "destinationName": "churn-prod", "destinationVersion": "1",
        "sourceAssetId": (f"azureml://locations/local/workspaces/{emulator.experiment_id('')}"
                          "/models/churn/versions/3"),
    }  # fmt: skip
    copied = emulator.registries.get("shared", "churn-prod", "1")
    assert copied is not None and copied.properties["modelUri"].endswith("/paths/m/")


def test_a_repeated_share_returns_the_existing_version_and_imports_once(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    register(azureml)
    first = azureml.share_model(share(), {})
    again = azureml.share_model(share(), {})

    assert again == first
    assert again.id == "azureml://registries/shared/models/churn/versions/3"
    imports = [r for r in emulator.requests if r.path.endswith("/import")]
    assert len(imports) == 1


def test_a_share_to_an_unknown_registry_is_permanent(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    register(azureml)
    with pytest.raises(PermanentError, match="404"):
        azureml.share_model(share(registry="elsewhere"), {})
    assert not [r for r in emulator.requests if r.path.endswith("/import")]


def test_sharing_a_version_the_workspace_lacks_is_permanent(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    with pytest.raises(PermanentError, match="404"):
        azureml.share_model(share(version="9"), {})
    assert emulator.registries.get("shared", "churn", "9") is None


def test_a_share_refused_for_a_missing_role_blocks(
    emulator: AzureMLEmulator, azureml: AzureMLJobs
) -> None:
    register(azureml)
    emulator.fail_next(403, body={"error": {"code": "AuthorizationFailed", "message": "no"}})
    with pytest.raises(BlockedError) as raised:
        azureml.share_model(share(), {})
    assert raised.value.cause == BlockedError.PERMISSION
    assert emulator.registries.get("shared", "churn", "3") is None
