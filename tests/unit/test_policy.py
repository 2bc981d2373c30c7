from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.contracts import Submission
from bridge.errors import ConfigurationError, PolicyViolation
from bridge.policy import Policy


def parse(data: dict[str, Any]) -> Submission:
    return Submission.parse(json.dumps(data))


def test_default_policy_allows_an_ordinary_command_job(submission_dict: dict[str, Any]) -> None:
    Policy().check(parse(submission_dict))


def test_every_violation_is_listed_at_once(submission_dict: dict[str, Any]) -> None:
    policy = Policy(
        allowed_computes=("gpu-cluster",),
        allowed_environments=("azureml:approved-",),
        max_instance_count=2,
        max_timeout_seconds=3600,
        required_tags=("cost_center",),
        allowed_asset_prefixes=("azureml://other/",),
        allowed_trigger_dags=("nothing",),
    )
    submission_dict["job"]["instance_count"] = 4
    with pytest.raises(PolicyViolation) as caught:
        policy.check(parse(submission_dict))
    message = str(caught.value)
    for expected in (
        "compute 'cpu-cluster' is not allowed",
        "environment 'azureml:sklearn:3' is not allowed",
        "instance_count 4 exceeds the maximum 2",
        "timeout must be set and at most 3600 seconds",
        "required tag 'cost_center' is missing",
        "asset 'azureml://bridge-demo/train/completed' is not allowed",
        "triggering DAG 'evaluate' is not allowed",
    ):
        assert expected in message


def test_yaml_job_is_checked_from_its_mapping(submission_dict: dict[str, Any]) -> None:
    submission_dict["job"] = {
        "kind": "yaml",
        "spec": {
            "type": "command",
            "command": "echo",
            "compute": "azureml:big-gpus",
            "environment": "azureml:x:1",
            "resources": {"instance_count": 20},
            "limits": {"timeout": 100},
        },
    }
    violations = Policy(allowed_computes=("cpu-cluster",)).violations(parse(submission_dict))
    assert violations == [
        "compute 'big-gpus' is not allowed",
        "instance_count 20 exceeds the maximum 10",
    ]


def test_job_type_outside_the_allowed_list_is_refused(submission_dict: dict[str, Any]) -> None:
    submission_dict["job"] = {"kind": "yaml", "spec": {"type": "automl"}}
    assert Policy().violations(parse(submission_dict)) == [
        "job type 'automl' is not allowed (command, pipeline, sweep)"
    ]


def test_policy_setting_errors_name_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="BRIDGE_POLICY is not JSON"):
        Policy.from_json("{")
    with pytest.raises(ConfigurationError, match="BRIDGE_POLICY is invalid: max_instance_count"):
        Policy.from_json('{"max_instance_count": 0}')
    assert Policy.from_json(None) == Policy()


def pipeline(submission_dict: dict[str, Any], train_compute: str | None) -> Submission:
    train: dict[str, Any] = {"type": "command", "command": "echo", "environment": "azureml:ok:1"}
    if train_compute:
        train["compute"] = train_compute
    spec = {
        "type": "pipeline",
        "settings": {"default_compute": "azureml:cpu-cluster"},
        "jobs": {"prep": {"type": "command", "command": "echo", "environment": "azureml:x:1"},
                 "train": train},
    }  # fmt: skip
    return parse({**submission_dict, "job": {"kind": "yaml", "spec": spec}})


def test_pipeline_steps_on_the_default_compute_pass(submission_dict: dict[str, Any]) -> None:
    policy = Policy(allowed_computes=("cpu-cluster",))
    assert policy.violations(pipeline(submission_dict, None)) == []


def test_each_pipeline_step_is_checked_and_named(submission_dict: dict[str, Any]) -> None:
    policy = Policy(allowed_computes=("cpu-cluster",), allowed_environments=("azureml:ok:",))
    assert policy.violations(pipeline(submission_dict, "azureml:gpu-monster")) == [
        "jobs.train: compute 'gpu-monster' is not allowed",
        "jobs.prep: environment 'azureml:x:1' is not allowed",
    ]
