from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import (
    JOB_NAME_SUFFIX,
    MAX_SUBMISSION_BYTES,
    CommandJob,
    Origin,
    Outcome,
    Submission,
    YamlJob,
    job_name,
    json_schema,
)
from bridge.errors import InvalidSubmission

SCHEMA_FILE = Path(__file__).parents[2] / "bridge" / "schemas" / "submission.v1.json"
AZUREML_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,254}$")


def test_valid_submission_parses_to_typed_models(submission_dict: dict[str, Any]) -> None:
    submission = Submission.parse(json.dumps(submission_dict))
    assert isinstance(submission.job, CommandJob)
    assert submission.job.inputs == {"lr": 0.01}
    assert submission.route(Outcome.COMPLETED).assets == ("azureml://bridge-demo/train/completed",)
    assert submission.route(Outcome.COMPLETED).triggers[0].conf == {"threshold": 0.9}
    assert submission.route(Outcome.CANCELED).is_empty


def test_submission_round_trips_through_json(submission_dict: dict[str, Any]) -> None:
    submission = Submission.parse(json.dumps(submission_dict))
    assert Submission.parse(submission.to_json()) == submission
    assert json.loads(submission.to_json())["schema"] == "bridge.submission/v1"


def test_yaml_job_mapping_is_accepted(submission_dict: dict[str, Any]) -> None:
    submission_dict["job"] = {"kind": "yaml", "spec": {"type": "pipeline", "jobs": {}}}
    submission = Submission.parse(json.dumps(submission_dict))
    assert isinstance(submission.job, YamlJob)
    assert submission.job.job_type == "pipeline"


def test_job_name_is_deterministic_valid_and_readable() -> None:
    origin = Origin(dag_id="Train-Model v2", run_id="manual__1", task_id="submit")
    name = job_name(origin)
    assert name == job_name(origin.model_copy())
    assert AZUREML_NAME.match(name), name
    assert name.startswith("train_model_v2-") and name.endswith(JOB_NAME_SUFFIX)


def test_job_name_differs_per_task_instance() -> None:
    base = Origin(dag_id="d", run_id="r", task_id="t")
    names = {
        job_name(base),
        job_name(base.model_copy(update={"run_id": "r2"})),
        job_name(base.model_copy(update={"task_id": "t2"})),
        job_name(base.model_copy(update={"map_index": 3})),
    }
    assert len(names) == 4


def test_job_name_of_a_dag_id_starting_with_a_digit_starts_with_a_letter() -> None:
    name = job_name(Origin(dag_id="42_etl", run_id="r", task_id="t"))
    assert AZUREML_NAME.match(name) and name.startswith("job_42_etl-")


def test_long_dag_id_keeps_job_name_short() -> None:
    name = job_name(Origin(dag_id="x" * 250, run_id="r", task_id="t"))
    assert len(name) <= 61 + len(JOB_NAME_SUFFIX)


def test_experiment_defaults_to_dag_id(submission_dict: dict[str, Any]) -> None:
    del submission_dict["job"]["experiment_name"]
    assert Submission.parse(json.dumps(submission_dict)).experiment_name == "Train-Model"


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda d: d.pop("origin"), "origin: Field required"),
        (lambda d: d["job"].pop("compute"), "job.command.compute"),
        (lambda d: d.update(schema="bridge.submission/v9"), "unsupported schema"),
        (lambda d: d["job"].update(instance_count=0), "job.command.instance_count"),
        (lambda d: d["on"].update(completed=["not a uri"]), "is not an asset URI"),
        (lambda d: d.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (lambda d: d["job"]["inputs"].update({"bad-name": 1}), "must be a Python identifier"),
    ],
)
def test_invalid_submission_error_names_the_problem(
    submission_dict: dict[str, Any], mutate: Any, named: str
) -> None:
    mutate(submission_dict)
    with pytest.raises(InvalidSubmission, match=re.escape(named)):
        Submission.parse(json.dumps(submission_dict))


def test_non_json_body_is_named() -> None:
    with pytest.raises(InvalidSubmission, match="not JSON"):
        Submission.parse(b"\xff{")


def test_oversized_submission_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidSubmission, match=f"limit is {MAX_SUBMISSION_BYTES}"):
        Submission.parse(b" " * (MAX_SUBMISSION_BYTES + 1))


def test_checked_in_json_schema_matches_the_models() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), "run `bridge schema --write`"


def test_a_cleared_task_names_a_new_job_and_one_never_cleared_keeps_its_earlier_name() -> None:
    import hashlib

    origin = Origin(dag_id="train", run_id="manual__1", task_id="submit")
    earlier = hashlib.sha256(b"train\x1fmanual__1\x1fsubmit\x1f-1").hexdigest()[:20]
    cleared = Origin(dag_id="train", run_id="manual__1", task_id="submit", cleared=2)

    assert job_name(origin) == f"train-{earlier}{JOB_NAME_SUFFIX}"  # in-flight jobs keep theirs
    assert job_name(cleared) != job_name(origin)
    assert job_name(cleared) != job_name(cleared.model_copy(update={"cleared": 4}))
    # Left out of the wire format until set: a Function App older than the field takes it.
    assert "cleared" not in origin.model_dump_json() and cleared.model_dump()["cleared"] == 2
