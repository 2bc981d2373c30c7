"""The Azure ML emulator: jobs created through azure-ai-ml run locally and publish Azure ML's events
to a webhook through azure-eventgrid's publisher. The webhook here is a real HTTP server."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.azureml import AzureMLJobs
from bridge.contracts import TAG_SUBMISSION, Submission
from bridge.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from bridge.local.azureml import DOCUMENTED, LOSSY, OBSERVED, AzureMLEmulator
from bridge.local.credential import LocalCredential
from bridge.local.event_grid import EventGridTopic, Loss
from bridge.local.process import free_port

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook recording every POST; answers the next status in `answers`, then 200."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], Any]] = []
        self.answers: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append((headers, body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for _, body in self.deliveries for event in body]

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.events()) >= count, f"only {len(self.events())} of {count} events arrived"
        return self.events()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


EmulatorFactory = Callable[..., AzureMLEmulator]


@pytest.fixture
def start_emulator(tmp_path: Path, receiver: Receiver) -> Iterator[EmulatorFactory]:
    started: list[AzureMLEmulator] = []

    def start(**options: Any) -> AzureMLEmulator:
        options.setdefault("webhook_url", receiver.url)
        options.setdefault("retry_delays", (0.05, 0.1))
        emulator = AzureMLEmulator(tmp_path / f"emulator{len(started)}", **options).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: EmulatorFactory) -> AzureMLEmulator:
    return start_emulator()


def jobs_of(emulator: AzureMLEmulator) -> AzureMLJobs:
    return AzureMLJobs(
        subscription_id=emulator.SUBSCRIPTION_ID,
        resource_group=emulator.RESOURCE_GROUP,
        workspace=emulator.WORKSPACE,
        credential=LocalCredential(),
        endpoint=emulator.endpoint,
        ca_file=str(emulator.authority),
    )


def submission(command: str, run_id: str = "run-1", **job: Any) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "train", "run_id": run_id, "task_id": "submit"},
            "job": {"command": command, "environment": "azureml:py:1", "compute": "cpu", **job},
        }
    )


def submit(emulator: AzureMLEmulator, command: str, run_id: str = "run-1", **job: Any) -> str:
    sub = submission(command, run_id, **job)
    jobs_of(emulator).create(sub, {TAG_SUBMISSION: sub.id})
    return sub.id


def status_events(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["runStatus"] for e in events if e["eventType"] == RUN_STATUS_CHANGED]


def test_command_job_resolves_inputs_and_writes_its_output(emulator: AzureMLEmulator) -> None:
    data_uri = "azureml://datastores/workspaceblobstore/paths/raw/"
    data = emulator.datastore_path(data_uri)
    assert data is not None
    data.mkdir(parents=True)
    (data / "rows.txt").write_text("three rows\n")
    name = submit(
        emulator,
        "cat ${{inputs.data}}/rows.txt > ${{outputs.model}}/model.txt && "
        "echo lr=${{inputs.lr}} $GREETING $AZUREML_RUN_ID >> ${{outputs.model}}/model.txt",
        inputs={"lr": 0.01, "data": {"type": "uri_folder", "path": data_uri}},
        outputs={"model": {}},
        environment_variables={"GREETING": "hello"},
    )

    assert emulator.wait_for_status(name, ["Completed", "Failed"], timeout=10) == "Completed"
    job = emulator.job(name)
    assert job is not None and job.exit_code == 0
    written = (job.outputs_dir / "model" / "model.txt").read_text()
    assert written == f"three rows\nlr=0.01 hello {name}\n"
    statuses = [status for status, _, _ in job.history]
    assert statuses == ["NotStarted", "Queued", "Running", "Completed"]


def test_completed_job_sends_running_then_completed_events(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    name = submit(emulator, "echo done", experiment_name="nightly", tags={"team": "ml"})

    events = receiver.wait_for(3)
    assert [e["eventType"] for e in events] == [RUN_STATUS_CHANGED] * 2 + [RUN_COMPLETED]
    assert status_events(events) == ["Running", "Completed"]
    experiment_id = emulator.experiment_id("nightly")
    for event in events:
        assert event["topic"] == emulator.workspace_id
        assert event["subject"] == f"experiments/{experiment_id}/runs/{name}"
        assert event["metadataVersion"] == "1"
        assert event["data"]["runId"] == name
        assert event["data"]["experimentId"] == experiment_id
        assert event["data"]["experimentName"] == "nightly"
        assert event["data"]["runTags"] == {"team": "ml", TAG_SUBMISSION: name}
    assert "runStatus" not in events[2]["data"]
    headers = receiver.deliveries[0][0]
    assert headers["aeg-event-type"] == "Notification"
    assert headers["aeg-sas-key"] == "local-emulator-key"
    assert [d.outcome for d in emulator.events] == ["delivered"] * 3


def test_failing_command_sends_failed_and_no_run_completed(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    name = submit(emulator, "echo broken >&2; exit 3")

    assert emulator.wait_for_status(name, ["Completed", "Failed"], timeout=10) == "Failed"
    events = receiver.wait_for(2)
    time.sleep(0.2)  # a RunCompleted, if any, would be delivered right behind
    assert status_events(receiver.events()) == ["Running", "Failed"]
    assert RUN_COMPLETED not in [e["eventType"] for e in receiver.events()]
    job = emulator.job(name)
    assert job is not None and job.exit_code == 3
    assert "broken" in job.log_path.read_text()
    assert len(events) == 2


def test_cancel_answers_202_and_passes_through_cancel_requested_as_the_spec_says(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    name = submit(emulator, "sleep 30")
    emulator.wait_for_status(name, ["Running"], timeout=10)

    started = time.monotonic()
    jobs_of(emulator).cancel(name)  # azure-ai-ml polls the Location until the job is Canceled
    assert emulator.job(name) is not None and emulator.job(name).status == "Canceled"  # type: ignore[union-attr]
    assert time.monotonic() - started < 5
    polls = [r for r in emulator.requests if "/mfeOperationResults/jc:" + name in r.path]
    assert polls and all(r.method == "GET" for r in polls)
    receiver.wait_for(3)
    time.sleep(0.3)  # the killed process must not turn the job into Failed afterwards
    assert status_events(receiver.events()) == ["Running", "CancelRequested", "Canceled"]
    job = emulator.job(name)
    assert job is not None and [status for status, _, _ in job.history][-2:] == [
        "CancelRequested", "Canceled",
    ]  # fmt: skip


def test_cancel_answered_200_at_once_is_understood_too(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    emulator = start_emulator(cancel_answer="200")
    name = submit(emulator, "sleep 30")
    emulator.wait_for_status(name, ["Running"], timeout=10)
    jobs_of(emulator).cancel(name)
    assert emulator.wait_for_status(name, ["Canceled"], timeout=5) == "Canceled"
    assert not [r for r in emulator.requests if "mfeOperationResults" in r.path]
    receiver.wait_for(2)
    assert status_events(receiver.events()) == ["Running", "Canceled"]


def test_job_running_past_its_timeout_fails(emulator: AzureMLEmulator) -> None:
    name = submit(emulator, "sleep 30", timeout_seconds=1)

    started = time.monotonic()
    assert emulator.wait_for_status(name, ["Completed", "Failed"], timeout=10) == "Failed"
    assert time.monotonic() - started < 4
    job = emulator.job(name)
    assert job is not None and "exceeded its timeout" in job.log_path.read_text()


def test_sweep_job_completes_without_running_anything(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    spec = {
        "type": "sweep",
        "compute": "azureml:cpu",
        "sampling_algorithm": "random",
        "trial": {"command": "echo ${{search_space.lr}}", "environment": "azureml:py:1"},
        "search_space": {"lr": {"type": "uniform", "min_value": 0.1, "max_value": 0.2}},
        "objective": {"goal": "maximize", "primary_metric": "accuracy"},
        "limits": {"max_total_trials": 2},
    }
    origin = {"dag_id": "tune", "run_id": "r", "task_id": "t"}
    sub = Submission.model_validate({"origin": origin, "job": {"kind": "yaml", "spec": spec}})
    jobs_of(emulator).create(sub, {})

    assert emulator.wait_for_status(sub.id, ["Completed", "Failed"], timeout=10) == "Completed"
    events = receiver.wait_for(3)
    assert {e["data"]["runType"] for e in events} == {"hyperdrive"}
    assert status_events(events) == ["Running", "Completed"]


def test_cloudevents_mode_delivers_cloudevents(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    emulator = start_emulator(event_schema="cloudevents")
    name = submit(emulator, "true")

    events = receiver.wait_for(3)
    content_type = receiver.deliveries[0][0]["content-type"]
    assert content_type.startswith("application/cloudevents-batch+json")
    assert [e["type"] for e in events] == [RUN_STATUS_CHANGED, RUN_STATUS_CHANGED, RUN_COMPLETED]
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"] == emulator.workspace_id
        assert event["subject"].endswith(f"/runs/{name}")
        assert event["data"]["runId"] == name


def test_lower_status_case_sends_lowercase_run_status(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    emulator = start_emulator(status_case="lower")
    submit(emulator, "true")

    assert status_events(receiver.wait_for(3)) == ["running", "completed"]


def test_delivery_is_retried_after_a_500_and_then_succeeds(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    receiver.answers = [500]
    submit(emulator, "true")

    events = receiver.wait_for(4)
    assert events[0]["id"] == events[1]["id"]  # the same event, delivered again
    first = emulator.events[0]
    assert first.attempts == ["500", "200"]
    assert first.outcome == "delivered"


def test_delivery_answered_400_is_dead_lettered_without_retry(
    emulator: AzureMLEmulator, receiver: Receiver
) -> None:
    receiver.answers = [400]
    submit(emulator, "true")

    receiver.wait_for(3)
    time.sleep(0.3)  # longer than the retry schedule: a retry would have arrived by now
    first = emulator.events[0]
    assert (first.attempts, first.outcome) == (["400"], "dead-lettered")
    assert len(receiver.deliveries) == 3


def test_unreachable_webhook_dead_letters_after_bounded_retries(
    start_emulator: EmulatorFactory,
) -> None:
    emulator = start_emulator(webhook_url=f"http://127.0.0.1:{free_port()}/api/events")
    submit(emulator, "true")
    deliveries = emulator.settled_events(3)

    assert [d.outcome for d in deliveries] == ["dead-lettered"] * 3
    assert deliveries[0].attempts == ["ServiceRequestError"] * 3


def test_events_are_recorded_when_no_webhook_is_subscribed(
    start_emulator: EmulatorFactory,
) -> None:
    emulator = start_emulator(webhook_url=None)
    name = submit(emulator, "true")
    deliveries = emulator.settled_events(3)

    assert emulator.job(name) is not None
    assert [(d.event["eventType"], d.outcome) for d in deliveries] == [
        (RUN_STATUS_CHANGED, "not-subscribed"),
        (RUN_STATUS_CHANGED, "not-subscribed"),
        (RUN_COMPLETED, "not-subscribed"),
    ]


def call(emulator: AzureMLEmulator, method: str, path: str, body: Any = None,
         token: str | None = "any-token") -> tuple[int, Any]:  # fmt: skip
    trusting = ssl.create_default_context(cafile=str(emulator.authority))
    request = urllib.request.Request(
        emulator.endpoint.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=trusting) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def jobs_path(workspace: str = AzureMLEmulator.WORKSPACE) -> str:
    return (
        f"/subscriptions/{AzureMLEmulator.SUBSCRIPTION_ID}/resourceGroups/"
        f"{AzureMLEmulator.RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/"
        f"workspaces/{workspace}/jobs"
    )


def test_unknown_route_answers_404_with_an_azure_error_and_is_recorded(
    emulator: AzureMLEmulator,
) -> None:
    status, body = call(emulator, "GET", jobs_path() + "/x/outputs?api-version=1")

    assert status == 404
    assert body["error"]["code"] == "NotFound"
    assert "/x/outputs" in body["error"]["message"]
    assert emulator.requests[-1].path.endswith("/jobs/x/outputs")
    assert emulator.requests[-1].query == {"api-version": "1"}


def test_job_in_another_workspace_is_not_found(emulator: AzureMLEmulator) -> None:
    body = {"properties": {"jobType": "Command", "command": "true"}}
    status, answer = call(emulator, "PUT", jobs_path("elsewhere") + "/j1", body)

    assert status == 404
    assert "elsewhere" in answer["error"]["message"]
    assert emulator.job("j1") is None


def test_request_without_a_bearer_token_is_refused(emulator: AzureMLEmulator) -> None:
    status, answer = call(emulator, "GET", jobs_path() + "/j1", token=None)

    assert status == 401
    assert answer["error"]["code"] == "AuthenticationFailed"


def test_command_naming_an_undeclared_input_is_refused(emulator: AzureMLEmulator) -> None:
    body = {"properties": {"jobType": "Command", "command": "echo ${{inputs.missing}}"}}
    status, answer = call(emulator, "PUT", jobs_path() + "/j2", body)

    assert status == 400
    assert "inputs.missing" in answer["error"]["message"]
    assert emulator.job("j2") is None


# --- profiles: Azure as documented, as observed, and losing events ------------------------------


def test_observed_profile_sends_what_public_payloads_show(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    emulator = start_emulator(profile=OBSERVED)
    done = submit(emulator, "true")
    emulator.wait_for_status(done, ["Completed"], timeout=10)
    completed = [e for e in receiver.wait_for(3) if e["data"]["runId"] == done]

    # NotStarted and Running as RunStatusChanged, then only RunCompleted: no Completed status event.
    assert [e["eventType"] for e in completed] == [RUN_STATUS_CHANGED] * 2 + [RUN_COMPLETED]
    assert status_events(completed) == ["NotStarted", "Running"]
    finished = completed[-1]
    assert finished["data"]["RunTags"] == {TAG_SUBMISSION: done}
    assert "runTags" not in finished["data"]
    assert finished["dataVersion"] == "2" and finished["data"]["runType"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00", finished["eventTime"])
    assert re.fullmatch(r".*T\d\d:\d\d:\d\d\.\d{7}Z", completed[0]["eventTime"])


def test_observed_profile_sends_nothing_for_a_canceled_job(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    emulator = start_emulator(profile=OBSERVED, webhook_url=receiver.url)
    name = submission("sleep 30", run_id="to-cancel").id
    jobs_of(emulator).create(submission("sleep 30", run_id="to-cancel"), {TAG_SUBMISSION: name})
    emulator.wait_for_status(name, ["Running"], timeout=10)
    jobs_of(emulator).cancel(name)
    job = emulator.job(name)
    assert job is not None and job.status == "Canceled"
    time.sleep(0.3)
    assert status_events(receiver.events()) == ["NotStarted", "Running"]


def test_a_failed_job_raises_run_status_changed_under_every_profile(
    start_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    for index, profile in enumerate((DOCUMENTED, OBSERVED)):
        emulator = start_emulator(profile=profile)
        name = submit(emulator, "exit 1", run_id=f"fails-{index}")
        emulator.wait_for_status(name, ["Failed"], timeout=10)
        assert "Failed" in status_events(receiver.wait_for(2 + index * 3))


def test_lossy_topic_drops_doubles_and_delays_a_seeded_share() -> None:
    topic_fates = []
    for _ in range(2):  # the same seed decides the same fates
        topic = EventGridTopic(access_key="k", loss=LOSSY.loss)
        fates = [topic.publish({"id": str(i)}) for i in range(200)]
        topic_fates.append([(d.outcome, d.fault) for d in fates])
        kinds = {
            "dropped": sum(d.outcome == "dropped" for d in topic.deliveries),
            "duplicated": sum(d.fault == "duplicate" for d in topic.deliveries),
            "delayed": sum(str(d.fault).startswith("delayed") for d in topic.deliveries),
        }
        assert all(15 <= count <= 90 for count in kinds.values()), kinds  # of 200
    assert topic_fates[0] == topic_fates[1]


def test_delayed_events_are_overtaken_by_later_ones(receiver: Receiver) -> None:
    topic = EventGridTopic(
        access_key="k", webhook_url=receiver.url, loss=Loss(delay=1.0, max_delay=0.5, seed=3)
    ).start()
    try:
        for index in range(6):
            topic.publish({"id": f"e{index}", "eventType": "x", "subject": "s", "data": {},
                           "eventTime": "2026-11-26T10:00:00Z", "dataVersion": "1"})  # fmt: skip
        topic.settled(6, timeout=10)
    finally:
        topic.stop()
    arrived = [event["id"] for event in receiver.events()]
    assert sorted(arrived) == [f"e{i}" for i in range(6)] and arrived != sorted(arrived)
