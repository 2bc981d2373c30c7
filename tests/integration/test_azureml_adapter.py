"""The azure-ai-ml adapter against the Azure ML emulator: what the SDK really sends, and how the
service's answers become the bridge's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from bridge.adapters.azureml import AzureMLJobs
from bridge.contracts import TAG_DAG_ID, TAG_SIGNATURE, TAG_SUBMISSION, Submission
from bridge.errors import BlockedError, InvalidSubmission, PermanentError, TransientError
from bridge.local.azureml import AzureMLEmulator
from bridge.local.credential import LocalCredential
from bridge.local.process import free_port
from bridge.operations import RegisterModel
from tests.integration.conftest import PIPELINE_SPEC

pytestmark = pytest.mark.integration

WORKSPACE_ID = (
    f"/subscriptions/{AzureMLEmulator.SUBSCRIPTION_ID}/resourceGroups/"
    f"{AzureMLEmulator.RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/"
    f"workspaces/{AzureMLEmulator.WORKSPACE}"
)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AzureMLEmulator]:
    with AzureMLEmulator(tmp_path) as emulator:
        yield emulator


def jobs_at(endpoint: str, ca_file: Path | None = None) -> AzureMLJobs:
    return AzureMLJobs(
        subscription_id=AzureMLEmulator.SUBSCRIPTION_ID,
        resource_group=AzureMLEmulator.RESOURCE_GROUP,
        workspace=AzureMLEmulator.WORKSPACE,
        credential=LocalCredential(),
        endpoint=endpoint,
        ca_file=str(ca_file) if ca_file else None,
    )


def jobs_of(emulator: AzureMLEmulator) -> AzureMLJobs:
    return jobs_at(emulator.endpoint, emulator.authority)


@pytest.fixture
def jobs(emulator: AzureMLEmulator) -> AzureMLJobs:
    return jobs_of(emulator)


def submission(job: dict[str, Any], dag_id: str = "train") -> Submission:
    origin = {"dag_id": dag_id, "run_id": "scheduled__2025-01-01", "task_id": "submit"}
    return Submission.model_validate({"origin": origin, "job": job})


def command_job(**fields: Any) -> dict[str, Any]:
    return {"command": "echo ${{inputs.lr}}", "environment": "azureml:py:3", "compute": "cpu",
            "inputs": {"lr": 0.01}, **fields}  # fmt: skip


BRIDGE_TAGS = {TAG_SUBMISSION: "s-1", TAG_SIGNATURE: "sig", TAG_DAG_ID: "train"}


def test_command_submission_is_one_put_carrying_the_whole_job(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    sub = submission(
        command_job(
            command="python train.py --lr ${{inputs.lr}} --data ${{inputs.data}} "
            "--out ${{outputs.model}}",
            inputs={
                "lr": 0.01,
                "data": {"type": "uri_folder", "path": "azureml://datastores/blob/paths/raw/"},
            },
            outputs={"model": {"type": "uri_folder"}},
            experiment_name="nightly",
            display_name="Nightly training",
            description="trains the model",
            tags={"team": "ml"},
            environment_variables={"MODE": "full"},
            instance_count=2,
            timeout_seconds=90,
        )
    )

    created = jobs.create(sub, BRIDGE_TAGS)

    assert [(r.method, r.path) for r in emulator.requests] == [
        ("PUT", f"{WORKSPACE_ID}/jobs/{sub.id}")
    ]
    body = emulator.requests[0].body["properties"]
    assert body["jobType"] == "Command"
    assert body["command"].startswith("python train.py --lr ${{inputs.lr}}")
    assert body["computeId"] == f"{WORKSPACE_ID}/computes/cpu"
    assert body["environmentId"] == f"{WORKSPACE_ID}/environments/py/versions/3"
    assert body["experimentName"] == "nightly"
    assert body["displayName"] == "Nightly training"
    assert body["description"] == "trains the model"
    assert body["inputs"] == {
        "lr": {"jobInputType": "literal", "value": "0.01"},
        "data": {"jobInputType": "uri_folder", "uri": "azureml://datastores/blob/paths/raw/"},
    }
    assert body["outputs"] == {"model": {"jobOutputType": "uri_folder"}}
    assert body["tags"] == {"team": "ml", **BRIDGE_TAGS}
    assert body["environmentVariables"] == {"MODE": "full"}
    assert body["resources"]["instanceCount"] == 2
    assert body["limits"]["timeout"] == "PT1M30S"
    assert created.name == sub.id
    assert created.status == "NotStarted"
    assert created.studio_url is not None and sub.id in created.studio_url


def test_experiment_defaults_to_the_dag_id(emulator: AzureMLEmulator, jobs: AzureMLJobs) -> None:
    jobs.create(submission(command_job(), dag_id="etl_daily"), {})

    assert emulator.requests[0].body["properties"]["experimentName"] == "etl_daily"


def test_yaml_command_job_is_created_under_the_submission_name(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    spec = {"type": "command", "command": "echo hi", "environment": "azureml:py:3",
            "compute": "azureml:cpu", "tags": {"owner": "ana"}, "inputs": {"n": 3}}  # fmt: skip
    sub = submission({"kind": "yaml", "spec": spec}, dag_id="score")

    created = jobs.create(sub, BRIDGE_TAGS)

    assert created.name == sub.id
    [request] = emulator.requests
    assert (request.method, request.path) == ("PUT", f"{WORKSPACE_ID}/jobs/{sub.id}")
    body = request.body["properties"]
    assert (body["jobType"], body["command"]) == ("Command", "echo hi")
    assert body["experimentName"] == "score"
    assert body["tags"] == {"owner": "ana", **BRIDGE_TAGS}
    assert body["inputs"]["n"] == {"jobInputType": "literal", "value": "3"}


def test_yaml_sweep_job_is_one_put(emulator: AzureMLEmulator, jobs: AzureMLJobs) -> None:
    spec = {
        "type": "sweep",
        "experiment_name": "tuning",
        "compute": "azureml:cpu",
        "sampling_algorithm": "random",
        "trial": {"command": "echo ${{search_space.lr}}", "environment": "azureml:py:3"},
        "search_space": {"lr": {"type": "uniform", "min_value": 0.1, "max_value": 0.2}},
        "objective": {"goal": "maximize", "primary_metric": "accuracy"},
        "limits": {"max_total_trials": 4},
    }
    sub = submission({"kind": "yaml", "spec": spec})

    jobs.create(sub, BRIDGE_TAGS)

    [request] = emulator.requests
    body = request.body["properties"]
    assert request.path.endswith(f"/jobs/{sub.id}")
    assert (body["jobType"], body["experimentName"]) == ("Sweep", "tuning")
    assert body["tags"] == BRIDGE_TAGS


PIPELINE = PIPELINE_SPEC


def test_yaml_pipeline_job_registers_its_steps_then_is_created_over_https(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    sub = submission({"kind": "yaml", "spec": PIPELINE})

    created = jobs.create(sub, BRIDGE_TAGS)

    assert created.name == sub.id and created.studio_url
    calls = [(r.method, r.path.split("/workspaces/local-workspace")[-1]) for r in emulator.requests]
    components = [path for method, path in calls if method == "PUT" and "/components/" in path]
    assert calls[0] == ("GET", "") and len(components) == 2  # the workspace, then one per step
    assert calls[-1] == ("PUT", f"/jobs/{sub.id}")
    body = emulator.requests[-1].body["properties"]
    assert (body["jobType"], body["experimentName"]) == ("Pipeline", "pipelines")
    assert body["tags"] == BRIDGE_TAGS
    step_components = {step["componentId"] for step in body["jobs"].values()}
    assert {c.rsplit("/workspaces/local-workspace", 1)[-1] for c in step_components} == set(
        components
    )
    assert emulator.wait_for_status(sub.id, ["Completed"], timeout=10) == "Completed"
    found = jobs.find(sub.id)
    assert found is not None and found.status == "Completed"


def test_resent_pipeline_submission_returns_the_existing_job(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    sub = submission({"kind": "yaml", "spec": PIPELINE})
    first = jobs.create(sub, BRIDGE_TAGS)
    again = jobs.create(sub, BRIDGE_TAGS)
    assert again.name == first.name == sub.id
    assert len([r for r in emulator.requests if r.path.endswith(f"/jobs/{sub.id}")]) == 2


@pytest.mark.parametrize(
    ("repeat_put", "requests"),
    [("200", ["PUT", "PUT"]), ("409", ["PUT", "PUT", "GET"]), ("400", ["PUT", "PUT", "GET"])],
)
def test_resent_submission_returns_the_existing_job_unaltered_whatever_azure_answers(
    tmp_path: Path, repeat_put: Literal["200", "409", "400"], requests: list[str]
) -> None:
    with AzureMLEmulator(tmp_path, repeat_put=repeat_put) as emulator:
        jobs = jobs_of(emulator)
        sub = submission(command_job())
        first = jobs.create(sub, BRIDGE_TAGS)
        stored = emulator.job(sub.id)
        assert stored is not None
        original = json.dumps(stored.put_body, sort_keys=True)

        again = jobs.create(sub, {**BRIDGE_TAGS, TAG_SIGNATURE: "another"})

        assert again.name == first.name == sub.id
        assert again.studio_url == first.studio_url
        assert [r.method for r in emulator.requests] == requests
        assert len({r.path for r in emulator.requests}) == 1
        job = emulator.job(sub.id)
        assert job is stored and json.dumps(job.put_body, sort_keys=True) == original


def test_find_reports_status_and_studio_url(emulator: AzureMLEmulator, jobs: AzureMLJobs) -> None:
    sub = submission(command_job())
    jobs.create(sub, {})
    emulator.wait_for_status(sub.id, ["Completed"], timeout=10)

    found = jobs.find(sub.id)

    assert found is not None
    assert (found.name, found.status) == (sub.id, "Completed")
    assert found.studio_url == f"https://ml.azure.com/runs/{sub.id}?wsid={WORKSPACE_ID}"


def test_find_of_an_unknown_job_returns_none(jobs: AzureMLJobs) -> None:
    assert jobs.find("no_such_job") is None


def test_server_error_is_transient_and_not_retried_in_process(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(500, count=3)

    with pytest.raises(TransientError, match="500"):
        jobs.create(submission(command_job()), {})
    assert len(emulator.requests) == 1


def test_throttling_is_transient_with_the_retry_after_delay(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(429, headers={"Retry-After": "7"})

    with pytest.raises(TransientError) as raised:
        jobs.create(submission(command_job()), {})
    assert raised.value.retry_after == 7.0


def test_bad_request_is_permanent_with_the_service_message(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    error = {"error": {"code": "UserError", "message": "compute cpu does not exist"}}
    emulator.fail_next(400, body=error)

    with pytest.raises(PermanentError, match="compute cpu does not exist") as raised:
        jobs.create(submission(command_job()), {})
    assert not isinstance(raised.value, InvalidSubmission)
    assert emulator.job(submission(command_job()).id) is None


def test_forbidden_blocks_as_a_missing_role(emulator: AzureMLEmulator, jobs: AzureMLJobs) -> None:
    """Right after `azd up`, role assignments take minutes to propagate: this heals."""
    emulator.fail_next(403)

    with pytest.raises(BlockedError, match="403") as raised:
        jobs.find("any")
    assert raised.value.cause == BlockedError.PERMISSION


def test_unauthenticated_blocks_on_credentials(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(401)

    with pytest.raises(BlockedError) as raised:
        jobs.find("any")
    assert raised.value.cause == BlockedError.CREDENTIALS


def test_unreachable_workspace_is_transient() -> None:
    jobs = jobs_at(f"http://127.0.0.1:{free_port()}/")

    with pytest.raises(TransientError, match="unreachable"):
        jobs.create(submission(command_job()), {})


def test_yaml_job_missing_fields_is_an_invalid_submission_naming_them(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    with pytest.raises(InvalidSubmission) as raised:
        jobs.create(submission({"kind": "yaml", "spec": {"type": "command"}}), {})

    assert "command: Missing data for required field" in str(raised.value)
    assert "environment: Missing data for required field" in str(raised.value)
    assert emulator.requests == []


def test_unknown_yaml_job_type_is_an_invalid_submission(jobs: AzureMLJobs) -> None:
    with pytest.raises(InvalidSubmission, match="Unsupported job type: bogus"):
        jobs.create(submission({"kind": "yaml", "spec": {"type": "bogus"}}), {})


def test_yaml_job_with_local_code_is_refused_before_any_upload(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    spec = {"type": "command", "command": "python x.py", "environment": "azureml:py:3",
            "compute": "azureml:cpu", "code": "./src"}  # fmt: skip

    with pytest.raises(InvalidSubmission, match=r"spec\.code"):
        jobs.create(submission({"kind": "yaml", "spec": spec}), {})
    assert emulator.requests == []


# --- models ---------------------------------------------------------------------------------------


def registration(**fields: Any) -> RegisterModel:
    return RegisterModel.model_validate({"name": "churn", **fields})


def model_puts(emulator: AzureMLEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "PUT" and "/models/" in r.path]


def test_a_model_from_a_jobs_output_is_one_put_naming_the_output(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    job = "train-job-airflow"
    emulator.seed(job, "Completed")  # Azure ML resolves the output of a job it has
    registered = jobs.register_model(registration(
        type="mlflow_model", from_job={"job": job, "output": "model"},
        tags={"auc": "0.91"}, properties={"stage": "candidate"}, description="weekly",
    ), "3", BRIDGE_TAGS)  # fmt: skip
    assert registered.name == "churn" and registered.version == "3"
    assert registered.id == f"{WORKSPACE_ID}/models/churn/versions/3"
    assert registered.tags == {"auc": "0.91", **BRIDGE_TAGS}
    assert registered.properties["stage"] == "candidate"
    [put] = model_puts(emulator)
    assert put.path == f"{WORKSPACE_ID}/models/churn/versions/3"
    sent = put.body["properties"]
    assert sent["modelUri"] == f"azureml://jobs/{job}/outputs/model"
    assert sent["modelType"] == "mlflow_model"
    assert (sent["tags"], sent["properties"]["stage"], sent["description"]) == (
        {"auc": "0.91", **BRIDGE_TAGS}, "candidate", "weekly",
    )  # fmt: skip
    stored = emulator.models.get("churn", "3")
    assert stored is not None and stored.properties["modelUri"] == sent["modelUri"]


def test_the_next_version_is_read_from_the_container_before_each_registration(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    path = "azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/d/paths/m/"
    first = jobs.register_model(registration(path=path), jobs.next_model_version("churn"), {})
    second = jobs.register_model(registration(path=path), jobs.next_model_version("churn"), {})
    assert (first.version, second.version) == ("1", "2")
    # The model's container answers `nextVersion` (404 before the first version: "1").
    asked = [(r.method, r.path.removeprefix(WORKSPACE_ID)) for r in emulator.requests]
    assert asked.count(("GET", "/models/churn")) == 2
    assert [r.path.rsplit("/", 1)[-1] for r in model_puts(emulator)] == ["1", "2"]


def test_a_model_version_is_read_with_its_tags_and_none_when_absent(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    jobs.register_model(
        registration(path="azureml://x", properties={"stage": "candidate"}), "4", BRIDGE_TAGS
    )
    found = jobs.model("churn", "4")
    assert found is not None
    assert (found.version, found.id) == ("4", f"{WORKSPACE_ID}/models/churn/versions/4")
    assert found.tags == BRIDGE_TAGS and found.properties["stage"] == "candidate"
    assert jobs.model("churn", "5") is None
    assert jobs.model("unknown", "1") is None


def test_a_refused_registration_is_permanent_with_the_service_message(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(400, body={"error": {"code": "UserError", "message": "bad modelUri"}})
    with pytest.raises(PermanentError, match="bad modelUri"):
        jobs.register_model(registration(path="azureml://x"), "1", {})
    assert emulator.models.get("churn", "1") is None


def test_a_registration_refused_for_a_missing_role_blocks(
    emulator: AzureMLEmulator, jobs: AzureMLJobs
) -> None:
    emulator.fail_next(403, body={"error": {"code": "AuthorizationFailed", "message": "no"}})
    with pytest.raises(BlockedError) as raised:
        jobs.register_model(registration(path="azureml://x"), "1", {})
    assert raised.value.cause == BlockedError.PERMISSION
