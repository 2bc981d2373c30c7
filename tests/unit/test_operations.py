"""Operations in the submission contract: each parses, round-trips and is refused with a reason
naming the field; a job's submission is unchanged on the wire; the policy governs every kind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.contracts import Origin, Submission, job_name
from bridge.errors import InvalidSubmission, PolicyViolation
from bridge.operations import (
    OPERATION_KINDS,
    BatchInput,
    BatchScore,
    Cancel,
    Deploy,
    RegisterModel,
    SetTraffic,
    ShareModel,
)
from bridge.policy import Policy

ORIGIN = {"dag_id": "train_to_prod", "run_id": "manual__1", "task_id": "step"}

OPERATIONS: dict[str, dict[str, Any]] = {
    "register_model": {
        "kind": "register_model", "name": "churn", "type": "mlflow_model",
        "from_job": {"job": "train_to_prod-job-airflow", "output": "model"},
        "tags": {"auc": "0.91"},
    },
    "deploy": {
        "kind": "deploy", "endpoint": "churn-ep", "deployment": "blue", "model": "churn:3",
        "instance_type": "Standard_DS3_v2", "instance_count": 2, "traffic": 0,
    },
    "set_traffic": {"kind": "set_traffic", "endpoint": "churn-ep",
                    "traffic": {"blue": 10, "green": 90}},
    "batch_score": {
        "kind": "batch_score", "endpoint": "churn-batch",
        "inputs": {"data": {"type": "uri_folder", "path": "azureml://datastores/d/paths/x/"},
                   "threshold": 0.5},
    },
    "cancel": {"kind": "cancel", "origin": {**ORIGIN, "task_id": "train"}},
    "share_model": {"kind": "share_model", "name": "churn", "version": "3",
                    "registry": "platform-prod"},
}  # fmt: skip


def submission(operation: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema": "bridge.submission/v1", "origin": ORIGIN, "operation": operation, **extra}


def parse(data: dict[str, Any]) -> Submission:
    return Submission.parse(json.dumps(data))


@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_each_operation_parses_round_trips_and_names_its_kind(kind: str) -> None:
    parsed = parse(submission(OPERATIONS[kind], on={"completed": ["azureml://ml/done"]}))
    assert parsed.kind == kind and parsed.job is None
    assert parsed.work.kind == kind
    assert Submission.parse(parsed.to_json()) == parsed
    wire = json.loads(parsed.to_json())
    assert "job" not in wire and wire["operation"]["kind"] == kind
    assert parsed.id == job_name(Origin.model_validate(ORIGIN))  # the ledger's key, as for a job


def test_each_model_is_the_one_its_kind_names() -> None:
    types = {"register_model": RegisterModel, "deploy": Deploy, "set_traffic": SetTraffic,
             "batch_score": BatchScore, "cancel": Cancel, "share_model": ShareModel}  # fmt: skip
    for kind, model in types.items():
        assert isinstance(parse(submission(OPERATIONS[kind])).operation, model)


def test_a_jobs_submission_is_unchanged_on_the_wire(submission_dict: dict[str, Any]) -> None:
    """A Function App older than operations forbids unknown fields: `operation` never appears
    in a job's submission, not even as null."""
    wire = json.loads(parse(submission_dict).to_json())
    assert "operation" not in wire and wire["job"]["kind"] == "command"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"schema": "bridge.submission/v1", "origin": ORIGIN},
         "give exactly one of job and operation"),
        ({**submission(OPERATIONS["cancel"]),
          "job": {"command": "x", "environment": "e:1", "compute": "c"}},
         "give exactly one of job and operation"),
        (submission({"kind": "retrain"}), "operation"),
        (submission({**OPERATIONS["register_model"], "path": "azureml://x"}),
         "give exactly one of from_job (a job's named output) and path"),
        (submission({"kind": "register_model", "name": "m"}),
         "give exactly one of from_job"),
        (submission({**OPERATIONS["register_model"], "name": "-bad"}),
         "operation.register_model.name"),
        (submission({**OPERATIONS["register_model"],
                     "from_job": {"job": "j", "output": "not an identifier"}}),
         "must be a Python identifier"),
        (submission({**OPERATIONS["deploy"], "model": "churn"}),
         "model 'churn' must be name:version"),
        (submission({**OPERATIONS["deploy"], "endpoint": "ab"}), "operation.deploy.endpoint"),
        (submission({**OPERATIONS["deploy"], "traffic": 101}), "operation.deploy.traffic"),
        (submission({**OPERATIONS["deploy"], "instance_count": 0}),
         "operation.deploy.instance_count"),
        (submission({**OPERATIONS["deploy"], "code": "./score"}),
         "code and scoring_script go together"),
        (submission({**OPERATIONS["deploy"], "code": "./score", "scoring_script": "s.py"}),
         "a scoring script needs an environment"),
        (submission({**OPERATIONS["set_traffic"], "traffic": {"blue": 50}}),
         "traffic must add up to 100, not 50"),
        (submission({**OPERATIONS["batch_score"], "inputs": {"a-b": 1}}),
         "input name 'a-b' must be a Python identifier"),
        (submission({"kind": "cancel"}), "give exactly one of job (its name) and origin"),
        (submission({"kind": "cancel", "job": "j", "origin": ORIGIN}), "give exactly one of job"),
        (submission({**OPERATIONS["share_model"], "registry": "r"}),
         "operation.share_model.registry"),
        (submission({**OPERATIONS["share_model"], "colour": "blue"}), "colour"),
    ],
)  # fmt: skip
def test_a_bad_operation_is_refused_naming_the_problem(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidSubmission) as raised:
        parse(data)
    assert problem in str(raised.value)


def test_deploy_reads_its_model_reference_with_or_without_the_azureml_prefix() -> None:
    for reference in ("churn:3", "azureml:churn:3"):
        deploy = Deploy(endpoint="churn-ep", deployment="blue", model=reference,
                        instance_type="Standard_DS3_v2")  # fmt: skip
        assert (deploy.model_name, deploy.model_version) == ("churn", "3")


def test_batch_inputs_keep_their_types() -> None:
    parsed = parse(submission(OPERATIONS["batch_score"]))
    assert isinstance(parsed.operation, BatchScore)
    assert parsed.operation.inputs["data"] == BatchInput(path="azureml://datastores/d/paths/x/")
    assert parsed.operation.inputs["threshold"] == 0.5
    assert parsed.experiment_name == "train_to_prod"  # the DAG's, as for a job


def test_cancel_names_the_job_of_the_task_that_submitted_it() -> None:
    parsed = parse(submission(OPERATIONS["cancel"]))
    assert isinstance(parsed.operation, Cancel) and isinstance(parsed.operation.origin, Origin)
    assert job_name(parsed.operation.origin) == job_name(
        Origin.model_validate({**ORIGIN, "task_id": "train"})
    )


# --- the policy -----------------------------------------------------------------------------------


def test_the_default_policy_allows_every_operation() -> None:
    for kind in OPERATION_KINDS:
        Policy().check(parse(submission(OPERATIONS[kind])))


def test_job_rules_do_not_apply_to_operations() -> None:
    policy = Policy(allowed_computes=("gpu",), required_tags=("cost_center",),
                    max_timeout_seconds=60)  # fmt: skip
    policy.check(parse(submission(OPERATIONS["register_model"])))


def test_every_operation_violation_is_listed_at_once() -> None:
    policy = Policy(
        allowed_endpoints=("other-ep",),
        allowed_instance_types=("Standard_F2s_v2",),
        max_instance_count=1,
        allowed_model_prefixes=("approved-",),
        allowed_environments=("azureml:approved-",),
        allowed_asset_prefixes=("azureml://ml/",),
    )
    deploy = {**OPERATIONS["deploy"], "environment": "azureml:mine:1", "code": "./src",
              "scoring_script": "score.py"}  # fmt: skip
    with pytest.raises(PolicyViolation) as raised:
        policy.check(parse(submission(deploy, on={"completed": ["s3://elsewhere"]})))
    assert str(raised.value).split("; ") == [
        "endpoint 'churn-ep' is not allowed",
        "model 'churn' is not allowed",
        "instance type 'Standard_DS3_v2' is not allowed",
        "instance_count 2 exceeds the maximum 1",
        "environment 'azureml:mine:1' is not allowed",
        "asset 's3://elsewhere' is not allowed",
    ]


def test_kinds_registries_and_model_names_are_governed() -> None:
    only_register = Policy(allowed_operations=("register_model",))
    with pytest.raises(PolicyViolation, match="operation 'share_model' is not allowed"):
        only_register.check(parse(submission(OPERATIONS["share_model"])))
    policy = Policy(allowed_registries=("platform-dev",), allowed_model_prefixes=("churn",))
    share = {**OPERATIONS["share_model"], "share_name": "renamed"}
    with pytest.raises(PolicyViolation) as raised:
        policy.check(parse(submission(share)))
    assert str(raised.value) == (
        "model 'renamed' is not allowed; registry 'platform-prod' is not allowed"
    )


def test_required_model_tags_name_what_the_model_lacks() -> None:
    policy = Policy(required_model_tags={"evaluation": "passed", "owner": None})
    assert policy.model_tag_violations("churn:3", {"evaluation": "passed", "owner": "x"}) == []
    assert policy.model_tag_violations("churn:3", {"evaluation": "failed"}) == [
        "model churn:3 has tag evaluation='failed', the policy requires 'passed'",
        "model churn:3 lacks the required tag 'owner'",
    ]
