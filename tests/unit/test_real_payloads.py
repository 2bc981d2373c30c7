"""Real public Azure ML event payloads (tests/fixtures/events, sources in SOURCES.md) parse to the
right job, status, outcome and tags, in both schemas and whatever casing each source used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.contracts import Outcome
from bridge.events import (
    Ignored,
    JobEvent,
    Malformed,
    ModelEvent,
    SecretEvent,
    parse_event,
    parse_events,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
AUTOML = "AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc"
SDK_TAGS = {"experiment_status": "ModelSelection",
            "experiment_status_descr": "Beginning model selection."}  # fmt: skip
SDK_WORKSPACE = "jenns-canary"
SPEC_WORKSPACE = "{workspace-name}"

# file: (schema, job name, status, outcome, tags, workspace)
RUN_EVENTS: dict[str, tuple[str, str, str, Outcome | None, dict[str, str], str]] = {
    "eventgrid-run-completed.sdk-net.json":
        ("eventgrid", AUTOML, "Completed", Outcome.COMPLETED, SDK_TAGS, SDK_WORKSPACE),
    "eventgrid-run-status-changed.sdk-net.json":
        ("eventgrid", AUTOML, "Running", None, SDK_TAGS, SDK_WORKSPACE),
    "cloudevent-run-completed.sdk-go.json":
        ("cloudevents", AUTOML, "Completed", Outcome.COMPLETED, SDK_TAGS, SDK_WORKSPACE),
    "cloudevent-run-status-changed.sdk-go.json":
        ("cloudevents", AUTOML, "Running", None, SDK_TAGS, SDK_WORKSPACE),
    "eventgrid-run-completed.rest-specs.json":
        ("eventgrid", f"{AUTOML}_5", "Completed", Outcome.COMPLETED, {}, SPEC_WORKSPACE),
    "eventgrid-run-status-changed.rest-specs.json":
        ("eventgrid", f"{AUTOML}_5", "Failed", Outcome.FAILED, {}, SPEC_WORKSPACE),
    "cloudevent-run-completed.rest-specs.json":
        ("cloudevents", f"{AUTOML}_5", "Completed", Outcome.COMPLETED, {}, SPEC_WORKSPACE),
    "cloudevent-run-status-changed.rest-specs.json":
        ("cloudevents", f"{AUTOML}_5", "Failed", Outcome.FAILED, {}, SPEC_WORKSPACE),
    # The specs' example spells `specVersion`: most likely a typo, read all the same.
    "cloudevent-run-status-changed.rest-specs.specVersion.json":
        ("cloudevents", f"{AUTOML}_5", "Failed", Outcome.FAILED, {}, SPEC_WORKSPACE),
}  # fmt: skip


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_is_listed_with_its_source() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text()
    files = sorted(path.name for path in FIXTURES.glob("*.json"))
    assert files and all(f"`{name}`" in sources for name in files)
    assert set(RUN_EVENTS) <= set(files)


@pytest.mark.parametrize("name", sorted(RUN_EVENTS))
def test_real_run_event_parses_to_its_job_status_and_tags(name: str) -> None:
    schema, job, status, outcome, tags, workspace = RUN_EVENTS[name]
    [event] = parse_events(fixture(name))
    assert isinstance(event, JobEvent), event
    assert (event.schema, event.job_name, event.status) == (schema, job, status)
    assert event.outcome is outcome
    assert dict(event.tags) == tags
    assert event.workspace == workspace
    assert event.subject.endswith(f"/runs/{job}")
    assert event.time is not None and event.time.startswith(("2017-", "2019-", "2020-"))


# Every public ModelRegistered payload, in each shape: (name, version, tags, workspace).
MODEL_EVENTS: dict[Path, tuple[str, str, dict[str, str], str | None]] = {
    # camelCase, the version a string (the .NET SDK's test payload)
    FIXTURES / "eventgrid-model-registered.sdk-net.json": (
        "sklearn_regression_model", "3", {"area": "diabetes", "type": "regression"},
        "jenns-canary"),
    # PascalCase, the version an integer (the REST spec and the docs)
    FIXTURES / "eventgrid-model-registered.rest-specs.json": (
        "sklearn_regression_model", "20", {"area": "diabetes", "type": "regression"},
        "{workspace-name}"),
    FIXTURES.parent / "lifecycle" / "eventgrid-model-registered.docs.json": (
        "sklearn_regression_model", "20", {"area": "diabetes", "type": "regression"},
        "{workspace-name}"),
    FIXTURES.parent / "lifecycle" / "cloudevent-model-registered.docs.json": (
        "sklearn_regression_model", "20", {"area": "diabetes", "type": "regression"},
        "{workspace-name}"),
    # no subject, `source` twice (the last one wins: the model): the Go SDK's CloudEvent
    FIXTURES / "cloudevent-model-registered.sdk-go.json": (
        "sklearn_regression_model", "3", {"area": "diabetes", "type": "regression"}, None),
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(MODEL_EVENTS), ids=lambda path: path.name)
def test_real_model_registered_event_reads_in_every_shape(path: Path) -> None:
    name, version, tags, workspace = MODEL_EVENTS[path]
    [event] = parse_events(path.read_bytes())
    assert isinstance(event, ModelEvent), event
    assert (event.model_name, event.model_version) == (name, version)
    assert dict(event.tags) == tags
    assert event.workspace == workspace
    assert event.properties


def test_a_model_event_falls_back_to_its_subject_and_refuses_when_nothing_names_it() -> None:
    base = json.loads(fixture("eventgrid-model-registered.sdk-net.json"))[0]
    bare = {**base, "data": {}}
    [event] = parse_events(json.dumps([bare]))
    assert isinstance(event, ModelEvent)
    assert (event.model_name, event.model_version) == ("sklearn_regression_model", "3")
    nameless = {**bare, "subject": "models"}
    [refused] = parse_events(json.dumps([nameless]))
    assert isinstance(refused, Malformed)
    assert "no model name and version in data or subject" in refused.reason
    [odd] = parse_events(json.dumps([{**base, "data": {**base["data"], "modelVersion": True}}]))
    assert isinstance(odd, Malformed)
    assert "modelVersion must be a string or an integer" in odd.reason


def test_run_completed_from_a_real_workspace_keeps_its_tags_under_RunTags() -> None:  # noqa: N802
    raw = json.loads(fixture("eventgrid-run-completed.sdk-net.json"))[0]
    assert "RunTags" in raw["data"] and "runTags" not in raw["data"]
    raw["data"]["RunTags"] = {"bridge_submission": "j-1", "bridge_signature": "abc"}
    event = parse_event(raw)
    assert isinstance(event, JobEvent)
    assert event.tags["bridge_signature"] == "abc"


def test_data_without_an_envelope_is_malformed_and_a_wrapped_one_is_read() -> None:
    data: dict[str, Any] = json.loads(
        fixture("data-only.run-status-changed-notstarted.docs-pr-59351.json")
    )
    [bare] = parse_events(json.dumps(data))
    assert isinstance(bare, Malformed) and "not an event" in bare.reason
    wrapped = {
        "id": "e-1",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "subject": f"experiments/{data['experimentId']}/runs/{data['runId']}",
        "topic": "/subscriptions/s/resourceGroups/r/providers/"
        "Microsoft.MachineLearningServices/workspaces/w",
        "eventTime": "2020-07-20T10:00:00.0000000Z",
        "data": data,
        "dataVersion": "2",
    }
    event = parse_event(wrapped)
    assert isinstance(event, JobEvent)
    assert (event.status, event.outcome) == ("NotStarted", None)
    assert event.tags["azureml.pipelineComponent"] == "pipelinerun"


LIFECYCLE = FIXTURES.parent / "lifecycle"  # model and resource events, ARM examples (issue 17)


def test_every_lifecycle_fixture_is_listed_with_its_source() -> None:
    sources = (LIFECYCLE / "SOURCES").read_text()
    files = sorted(path.name for path in LIFECYCLE.glob("*.json"))
    assert files and all(f"| {name} |" in sources for name in files)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in LIFECYCLE.glob("*.json")
                   if not p.name.startswith("rest-") and "model-registered" not in p.name),
)  # fmt: skip
def test_real_deployment_and_resource_events_are_ignored_not_refused(name: str) -> None:
    """Until the bridge routes them, ModelDeployed and resource write events reaching its
    webhook are acknowledged and left alone, never recorded as malformed."""
    events = parse_events((LIFECYCLE / name).read_bytes())
    assert events and all(isinstance(event, Ignored) for event in events), events


@pytest.mark.parametrize(
    ("name", "schema"),
    [("eventgrid-keyvault-secret-new-version.rest-specs.json", "eventgrid"),
     ("cloudevent-keyvault-secret-new-version.rest-specs.json", "cloudevents")],
)  # fmt: skip
def test_real_key_vault_secret_event_names_vault_secret_and_version(name: str, schema: str) -> None:
    [event] = parse_events(fixture(name))
    assert isinstance(event, SecretEvent), event
    version = "ee059b2bb5bc48398a53b168c6cdcb10"  # pragma: allowlist secret (a version id)
    assert (event.vault, event.name, event.version, event.schema) == (
        "sample-kv", "newsecret", version, schema,
    )  # fmt: skip
    assert not event.near_expiry  # a new version asks for no rotation


@pytest.mark.parametrize(
    "data",
    [
        # As the docs spell it (camelCase, numbers) ...
        {"id": "https://kv.vault.azure.net/secrets/signing-key/abc", "vaultName": "kv",
         "objectType": "Secret", "objectName": "signing-key", "version": "abc",
         "nbf": 1559081980, "exp": 1559082102},
        # ... and as hand-made deliveries in public repositories send it: no Version, no Id.
        {"VaultName": "kv", "ObjectType": "Secret", "ObjectName": "signing-key"},
    ],
)  # fmt: skip
def test_a_near_expiry_event_is_read_in_every_spelling_seen(data: dict[str, Any]) -> None:
    event = parse_event({"id": "e1", "eventType": "Microsoft.KeyVault.SecretNearExpiry",
                         "subject": "signing-key", "eventTime": "2026-12-05T01:00:00Z",
                         "data": data, "dataVersion": "1"})  # fmt: skip
    assert isinstance(event, SecretEvent)
    assert (event.vault, event.name, event.near_expiry) == ("kv", "signing-key", True)
    assert event.version == data.get("version")


def test_a_secret_event_naming_no_secret_is_malformed() -> None:
    [event] = parse_events(json.dumps([{"id": "e2", "eventType": "Microsoft.KeyVault.SecretExpired",
                                        "data": {"VaultName": "kv"}}]))  # fmt: skip
    assert isinstance(event, Malformed)
    assert "neither data.ObjectName nor a subject" in event.reason
