from __future__ import annotations

import json
import re
from typing import Any

from bridge.contracts import Origin, Outcome, Route, Submission, Trigger
from bridge.effects import EffectKind, Fact, plan

ORIGIN = Origin(dag_id="train", run_id="manual__1", task_id="submit")


def fact(**changes: Any) -> Fact:
    values: dict[str, Any] = {
        "job_name": "train-abc",
        "outcome": Outcome.COMPLETED,
        "status": "Completed",
        "experiment": "churn",
        "workspace": "ws",
        "studio_url": "https://ml.azure.com/runs/train-abc",
        "origin": ORIGIN,
        "event_id": "e1",
        "event_time": "2026-11-25T10:00:00Z",
    }
    values.update(changes)
    return Fact(**values)


def test_each_target_gets_one_effect_in_submission_order() -> None:
    route = Route(
        assets=("a://1", "a://2", "a://1"),
        triggers=(Trigger(dag_id="x", conf={"k": 1}), Trigger(dag_id="x")),
    )
    effects = plan(fact(), route)
    assert [(e.kind, e.target) for e in effects] == [
        (EffectKind.ASSET_EVENT, "a://1"),
        (EffectKind.ASSET_EVENT, "a://2"),
        (EffectKind.DAG_RUN, "x"),
    ]
    assert effects[2].conf == {"k": 1}


def test_effect_identity_ignores_which_event_said_it() -> None:
    """RunCompleted and RunStatusChanged(Completed) must claim the same ledger row."""
    route = Route(assets=("a://1",))
    first = plan(fact(event_id="run-completed"), route)[0]
    second = plan(fact(event_id="status-changed"), route)[0]
    assert first.id == second.id
    assert re.fullmatch(r"[a-z0-9-]+", first.id)


def test_extra_carries_everything_a_consumer_reads() -> None:
    effect = plan(fact(), Route(assets=("a://1",)))[0]
    extra = effect.extra()
    assert extra == {
        "job_name": "train-abc",
        "status": "Completed",
        "experiment": "churn",
        "studio_url": "https://ml.azure.com/runs/train-abc",
        "workspace": "ws",
        "event_id": "e1",
        "event_time": "2026-11-25T10:00:00Z",
        "submission_id": "train-abc",
        "origin": {"dag_id": "train", "run_id": "manual__1", "task_id": "submit", "map_index": -1},
        "via": "event",
        "effect_id": f"train-abc/{effect.id}",
    }
    json.dumps(extra)  # Airflow stores it as JSON


def test_rejection_reason_is_in_extra() -> None:
    extra = plan(fact(status="Rejected", reason="policy: nope"), Route(assets=("a://f",)))[
        0
    ].extra()
    assert extra["status"] == "Rejected" and extra["reason"] == "policy: nope"


def test_dag_run_id_is_deterministic_per_job_and_outcome() -> None:
    route = Route(triggers=(Trigger(dag_id="evaluate"),))
    completed = plan(fact(), route)[0]
    failed = plan(fact(outcome=Outcome.FAILED), route)[0]
    assert completed.dag_run_id == "azureml__train-abc__completed"
    assert failed.dag_run_id != completed.dag_run_id
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", completed.dag_run_id)


def test_submission_route_feeds_plan(submission_dict: dict[str, Any]) -> None:
    submission = Submission.parse(json.dumps(submission_dict))
    effects = plan(fact(), submission.route(Outcome.COMPLETED))
    assert [e.kind for e in effects] == [EffectKind.ASSET_EVENT, EffectKind.DAG_RUN]


def test_outputs_go_into_extra_by_name_with_their_type_and_uri() -> None:
    from bridge.ports import JobOutput

    outputs = {"model": JobOutput("uri_folder", "azureml://datastores/ws/paths/m/"),
               "report": JobOutput("uri_file", None)}  # fmt: skip
    extra = fact(outputs=outputs).extra()
    assert extra["outputs"] == {
        "model": {"type": "uri_folder", "uri": "azureml://datastores/ws/paths/m/"},
        "report": {"type": "uri_file", "uri": None},  # as Azure ML left it: not guessed
    }
    assert "outputs" not in fact().extra()  # not read: the key is absent, not empty
    json.dumps(extra)  # an asset event's extra must be JSON
