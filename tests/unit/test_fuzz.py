"""Property-based proof (hypothesis) that no input breaks the parsers or the policy: every result
is one of the shapes the bridge handles, and every refusal names its reason. About 9,000
generated inputs here, and 2,500 through the webhook with a real ledger in
tests/integration/test_fuzz_webhook.py."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.contracts import Origin, Submission, is_job_name, job_name
from bridge.errors import InvalidEvent, InvalidSubmission, PolicyViolation
from bridge.events import (
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    SUBSCRIPTION_VALIDATION,
    Ignored,
    JobEvent,
    Malformed,
    Validation,
    parse_events,
)
from bridge.policy import Policy


def fuzz(examples: int) -> settings:
    """Many examples, no per-example deadline (CI machines vary); the fixture is read-only."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
ENVELOPE = ["id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion",
            "metadataVersion", "specversion", "source", "type", "time"]  # fmt: skip
DATA = ["runId", "runStatus", "runTags", "RunTags", "experimentName", "experimentId", "runType",
        "runProperties", "validationCode"]  # fmt: skip
words = st.sampled_from([RUN_COMPLETED, RUN_STATUS_CHANGED, SUBSCRIPTION_VALIDATION, "Completed",
                         "failed", "CANCELED", "Running", "", "1.0", "job-1",
                         "2026-11-26T10:00:00Z", "experiments/e/runs/job-1"])  # fmt: skip


def cased(names: list[str]) -> st.SearchStrategy[str]:
    """A field name as Azure spells it, or in another casing (keys are matched regardless)."""
    return st.sampled_from(names).flatmap(
        lambda name: st.sampled_from([name, name.lower(), name.upper()])
    )


values = words | json_values
nested = st.dictionaries(st.text(max_size=6), values, max_size=3)
data_objects = st.dictionaries(cased(DATA), values | nested, max_size=6)
events = st.dictionaries(
    cased(ENVELOPE),
    values | data_objects | data_objects.map(json.dumps),  # data may arrive as a JSON string
    max_size=10,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.lists(events | json_values, max_size=5).map(lambda v: json.dumps(v).encode())
    | events.map(lambda v: json.dumps(v).encode())
)


def assert_every_item_is_handled(parsed: list[Any]) -> None:
    for item in parsed:
        assert isinstance(item, JobEvent | Ignored | Validation | Malformed), item
        if isinstance(item, Malformed):
            assert item.reason.startswith(f"event [{item.index}]"), item
        if isinstance(item, Ignored):
            assert item.reason, item


@fuzz(4000)
@given(bodies)
def test_any_body_parses_into_handled_items_or_a_named_refusal(body: bytes) -> None:
    try:
        parsed = parse_events(body)
    except InvalidEvent as exc:
        assert str(exc), "a refusal names its reason"
        return
    assert parsed, "a body the parser accepts holds at least one item"
    assert_every_item_is_handled(parsed)


@fuzz(2000)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_a_submission_or_a_named_refusal(body: bytes) -> None:
    try:
        submission = Submission.parse(body)
    except InvalidSubmission as exc:
        assert str(exc)
        return
    assert submission.id.endswith("-airflow")


def mutated(valid: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """The valid submission with one field (at any depth) replaced, or removed for a None path."""
    changed = copy.deepcopy(valid)
    node = changed
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[path[-1]] = value
    return changed


PATHS = [["schema"], ["origin"], ["origin", "dag_id"], ["origin", "run_id"],
         ["origin", "map_index"], ["job"], ["job", "kind"], ["job", "command"],
         ["job", "compute"], ["job", "inputs"], ["job", "instance_count"], ["job", "spec"],
         ["on"], ["on", "completed"], ["on", "failed"], ["trigger"], ["extra"]]  # fmt: skip


@fuzz(2000)
@given(st.sampled_from(PATHS), json_values | words)
def test_a_submission_with_any_field_changed_is_valid_or_named(
    submission_dict: dict[str, Any], path: list[str], value: Any
) -> None:
    body = json.dumps(mutated(submission_dict, path, value))
    try:
        Submission.parse(body)
    except InvalidSubmission as exc:
        assert str(exc)


policies = st.builds(
    Policy,
    allowed_computes=st.none() | st.lists(st.sampled_from(["cpu-cluster", "gpu", "x"]), max_size=2)
    .map(tuple),
    allowed_environments=st.none() | st.lists(st.sampled_from(["azureml:", "azureml:sk", "y"]),
                                              max_size=2).map(tuple),
    max_instance_count=st.integers(min_value=1, max_value=8),
    max_timeout_seconds=st.none() | st.integers(min_value=1, max_value=100_000),
    allowed_asset_prefixes=st.none() | st.lists(st.sampled_from(["azureml://", "s3://"]),
                                                max_size=2).map(tuple),
)  # fmt: skip


@fuzz(1000)
@given(policies, st.sampled_from(["cpu-cluster", "gpu", "other"]), st.integers(0, 12),
       st.sampled_from(["azureml:sklearn:3", "docker.io/x", ""]))  # fmt: skip
def test_policy_passes_or_names_every_violation(
    submission_dict: dict[str, Any], policy: Policy, compute: str, instances: int, environment: str
) -> None:
    job = {**submission_dict["job"], "compute": compute, "environment": environment or None}
    if instances:
        job["instance_count"] = instances
    try:
        submission = Submission.parse(json.dumps({**submission_dict, "job": job}))
    except InvalidSubmission:
        return  # the contract refused it first: the policy never sees it
    violations = policy.violations(submission)
    try:
        policy.check(submission)
    except PolicyViolation as exc:
        assert violations and str(exc) == "; ".join(violations)
        return
    assert violations == []


@fuzz(1000)
@given(st.text(min_size=1, max_size=250), st.text(min_size=1, max_size=60),
       st.text(min_size=1, max_size=60), st.integers(-1, 10_000))  # fmt: skip
def test_every_job_name_the_bridge_gives_is_one_it_recognises(
    dag_id: str, run_id: str, task_id: str, map_index: int
) -> None:
    name = job_name(Origin(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index))
    assert is_job_name(name), name
    assert len(name) <= 255 and not is_job_name(name + "/x")
