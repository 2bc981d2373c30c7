"""SubmitAzureMLJobOperator run for real: `dag.test()` inside the Airflow venv, sending through the
production `ServiceBusSender` to a local Service Bus (`bridge.local.servicebus`) in this process.

Each runner invocation is one subprocess of `.venv-airflow/bin/python operator_runner.py` with its
own AIRFLOW_HOME (a copy of one migrated SQLite database) and its own queue, found through the
`BRIDGE_*` variables or an `azureml_bridge` connection (`use_development_emulator`); the runner
reaches the local Service Bus over TCP as it would Microsoft's emulator. The test process then
peeks at the queues with azure-servicebus and reads the run's XComs from the runner's JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.servicebus import ServiceBusClient
from cryptography.fernet import Fernet

from bridge.contracts import SCHEMA_ID, CommandJob, Submission, YamlJob
from bridge.local.servicebus import LocalServiceBus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
RUNNER = Path(__file__).with_name("operator_runner.py")
EXAMPLE_DAGS = REPO / "examples" / "dags"
EXAMPLE_JOBS = REPO / "examples" / "jobs"
WORKSPACE_ID = (
    "/subscriptions/0000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws"
)
TRAINED = "azureml://bridge-demo/train/completed"
TRAINING_FAILED = "azureml://bridge-demo/train/failed"
SUBMITTED_IN = re.compile(r"Submitted Azure ML job (\S+) \(experiment [^)]*\) in (\d+) ms")
# Service Bus queues come from infra, never from the sender: each one a test sends to exists.
QUEUES = ("examples", "generated", "from-connection", "from-argument", "from-database",
          "from-secrets-backend", "from-env")  # fmt: skip


@dataclass
class DagRunResult:
    """One DAG's `dag.test()`: the runner's JSON and the task log lines it printed."""

    result: dict[str, Any]
    log: str

    @property
    def state(self) -> str:
        return str(self.result["state"])

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.result["tasks"][task_id])

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.result["xcom"].get(f"{task_id}:{key}")

    def execute_ms(self) -> list[int]:
        return [int(ms) for _, ms in SUBMITTED_IN.findall(self.log)]


@dataclass(frozen=True)
class Sent:
    """One message on a queue, as azure-servicebus peeks it."""

    message_id: str | None
    content_type: str | None
    subject: str | None
    application_properties: dict[str, str]
    submission: Submission


def local_service_bus() -> Iterator[LocalServiceBus]:
    with LocalServiceBus() as running:
        for queue in QUEUES:
            running.create_queue(queue)
        yield running


@pytest.fixture(scope="module")
def bus() -> Iterator[LocalServiceBus]:
    """Where the operator sends, whether the environment or a connection names it."""
    yield from local_service_bus()


@pytest.fixture(scope="module")
def env_bus() -> Iterator[LocalServiceBus]:
    """A second namespace, named only by the environment when connections name `bus`: whatever
    lands here shows the environment won over a connection."""
    yield from local_service_bus()


def emulator_env(bus: LocalServiceBus, queue: str) -> dict[str, str]:
    """What `Stack.queue_env` gives the operator: the emulator's host:port, over plain TCP."""
    return {
        "BRIDGE_SERVICEBUS_NAMESPACE": bus.address,
        "BRIDGE_SERVICEBUS_EMULATOR": "true",
        "BRIDGE_SUBMISSION_QUEUE": queue,
    }


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-migrated")
    env = airflow_env(home, dags_folder=EXAMPLE_DAGS)
    subprocess.run(
        [str(AIRFLOW_PYTHON), "-m", "airflow", "db", "migrate"],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return home / "airflow.db"


def airflow_env(home: Path, *, dags_folder: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BRIDGE_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    env.update(extra)
    return env


def run_dags(
    tmp_path: Path, migrated_db: Path, dags: Path, dag_ids: list[str], extra: Mapping[str, str]
) -> dict[str, DagRunResult]:
    """`dag.test()` each DAG in a fresh copy of the migrated database; results by DAG id."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy(migrated_db, home / "airflow.db")
    dags_folder = dags if dags.is_dir() else dags.parent
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), str(RUNNER), str(dags), *dag_ids],
        env=airflow_env(home, dags_folder=dags_folder, extra=extra),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return parse_runner_output(completed.stdout, output)


def parse_runner_output(stdout: str, output: str) -> dict[str, DagRunResult]:
    results: dict[str, DagRunResult] = {}
    for section in ("\n" + stdout).split("\nBEGIN ")[1:]:
        dag_id, _, body = section.partition("\n")
        log, _, result = body.rpartition("RESULT ")
        parsed = json.loads(result.splitlines()[0])
        assert "import_errors" not in parsed, parsed
        results[dag_id] = DagRunResult(parsed, log)
    assert results, output[-4000:]
    return results


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_messages(bus: LocalServiceBus, queue: str) -> list[Sent]:
    """Every message on the queue, peeked (left there) with azure-servicebus."""
    with (
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
        client.get_queue_receiver(queue) as receiver,
    ):
        peeked = receiver.peek_messages(max_message_count=100, sequence_number=1)
    assert len(peeked) == bus.namespace.count(queue) < 100
    return [
        Sent(
            message_id=message.message_id,
            content_type=message.content_type,
            subject=message.subject,
            application_properties={
                text(k): text(v) for k, v in (message.application_properties or {}).items()
            },
            submission=Submission.parse(str(message)),
        )
        for message in peeked
    ]


def submissions_by_dag(messages: list[Sent]) -> dict[str, list[Submission]]:
    found: dict[str, list[Submission]] = {}
    for message in messages:
        found.setdefault(message.submission.origin.dag_id, []).append(message.submission)
    return found


# --- the example producers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_runs(
    bus: LocalServiceBus, migrated_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRunResult]:
    extra = {**emulator_env(bus, "examples"), "BRIDGE_AZUREML_WORKSPACE_ID": WORKSPACE_ID}
    return run_dags(
        tmp_path_factory.mktemp("examples"), migrated_db, EXAMPLE_DAGS,
        ["azureml_train", "azureml_train_fails"], extra,
    )  # fmt: skip


def test_example_producer_sends_one_submission_with_origin_job_and_routes(
    bus: LocalServiceBus, example_runs: dict[str, DagRunResult]
) -> None:
    run = example_runs["azureml_train"]
    assert run.state == "success"

    [submission] = submissions_by_dag(queue_messages(bus, "examples"))["azureml_train"]
    assert submission.origin.model_dump() == {
        "dag_id": "azureml_train",
        "run_id": run.result["run_id"],
        "task_id": "submit_training",
        "map_index": -1,
    }
    assert submission.job == YamlJob(spec=yaml.safe_load((EXAMPLE_JOBS / "train.yml").read_text()))
    assert "${{inputs.learning_rate}}" in submission.job.spec["command"]
    assert submission.on.completed == [TRAINED]
    assert submission.on.failed == submission.on.canceled == [TRAINING_FAILED]
    assert submission.experiment_name == "bridge-demo"


def test_example_producer_returns_the_job_name_and_pushes_the_studio_url(
    bus: LocalServiceBus, example_runs: dict[str, DagRunResult]
) -> None:
    run = example_runs["azureml_train"]
    [message] = [
        m for m in queue_messages(bus, "examples")
        if m.application_properties.get("dag_id") == "azureml_train"
    ]  # fmt: skip

    assert run.xcom("submit_training") == message.message_id == message.submission.id
    assert run.xcom("submit_training", "studio_url") == (
        f"https://ml.azure.com/runs/{message.message_id}?wsid={WORKSPACE_ID}"
    )
    # What the bridge's Service Bus trigger reads besides the body.
    assert (message.content_type, message.subject) == ("application/json", "bridge.submission")
    assert message.application_properties == {
        "schema": SCHEMA_ID,
        "submission_id": message.submission.id,
        "dag_id": "azureml_train",
    }


def test_failing_example_routes_its_failure_to_the_failure_asset(
    bus: LocalServiceBus, example_runs: dict[str, DagRunResult]
) -> None:
    assert example_runs["azureml_train_fails"].state == "success"  # the task only submits

    [submission] = submissions_by_dag(queue_messages(bus, "examples"))["azureml_train_fails"]
    assert submission.job == YamlJob(spec=yaml.safe_load((EXAMPLE_JOBS / "fail.yml").read_text()))
    assert submission.on.failed == [TRAINING_FAILED]


def test_submit_task_reports_its_send_time_once(
    example_runs: dict[str, DagRunResult],
) -> None:
    """The figure itself is measured in bench/calls.py (make bench), not asserted here."""
    timings = {dag_id: run.execute_ms() for dag_id, run in example_runs.items()}
    durations = {
        dag_id: run.task("submit_training")["duration"] for dag_id, run in example_runs.items()
    }
    sys.stderr.write(f"\nexecute ms: {timings}; task instance seconds: {durations}\n")
    assert all(len(ms) == 1 for ms in timings.values()), timings


# --- operator arguments beyond the examples, and invalid jobs ----------------------------------

GENERATED_DAGS = """
from airflow.sdk import Asset, dag

from bridge.contracts import CommandJob
from bridge.provider import SubmitAzureMLJobOperator

MAPPING = {
    "type": "command",
    "command": "python train.py --lr ${{inputs.learning_rate}}",
    "display_name": "train {{ dag_run.run_id }}",
    "inputs": {"learning_rate": 0.1},
    "environment": "azureml:env:1",
    "compute": "cpu-cluster",
}


@dag(schedule=None)
def mapping_job():
    SubmitAzureMLJobOperator(
        task_id="submit",
        job=MAPPING,
        on_completed=["azureml://bridge-demo/mapping/completed/"],
        trigger={"completed": [{"dag_id": "evaluate", "conf": {"source": "{{ run_id }}"}}]},
    )


@dag(schedule=None)
def command_job():
    SubmitAzureMLJobOperator(
        task_id="submit",
        job=CommandJob(command="echo hi", environment="azureml:env:1", compute="cpu-cluster"),
        on_failed=[Asset("azureml://bridge-demo/command/failed")],
    )


@dag(schedule=None)
def mapped_jobs():
    SubmitAzureMLJobOperator.partial(task_id="submit").expand(
        job=[{**MAPPING, "inputs": {"learning_rate": lr}} for lr in (0.1, 0.2)]
    )


def failing(dag_id, **arguments):
    @dag(dag_id=dag_id, schedule=None, default_args={"retries": 3, "retry_delay": 0})
    def producer():
        SubmitAzureMLJobOperator(task_id="submit", **arguments)

    producer()


failing("missing_file", job="jobs/missing.yml")
failing("not_a_mapping", job="jobs/list.yml")
failing("local_code", job={**MAPPING, "code": "./src"})
failing("contract_violation", job=MAPPING, trigger={"completed": [{"conf": {}}]})

mapping_job()
command_job()
mapped_jobs()
"""
INVALID = ["missing_file", "not_a_mapping", "local_code", "contract_violation"]


@pytest.fixture(scope="module")
def generated_runs(
    bus: LocalServiceBus, migrated_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRunResult]:
    root = tmp_path_factory.mktemp("generated")
    dags = root / "dags"
    (dags / "jobs").mkdir(parents=True)
    (dags / "producers.py").write_text(textwrap.dedent(GENERATED_DAGS))
    (dags / "jobs" / "list.yml").write_text("- type: command\n- compute: cpu-cluster\n")
    extra = emulator_env(bus, "generated")
    return run_dags(
        root, migrated_db, dags / "producers.py",
        ["mapping_job", "command_job", "mapped_jobs", *INVALID], extra,
    )  # fmt: skip


def test_mapping_job_is_templated_but_azureml_bindings_are_kept(
    bus: LocalServiceBus, generated_runs: dict[str, DagRunResult]
) -> None:
    run = generated_runs["mapping_job"]
    [submission] = submissions_by_dag(queue_messages(bus, "generated"))["mapping_job"]

    assert isinstance(submission.job, YamlJob)
    assert submission.job.spec["command"] == "python train.py --lr ${{inputs.learning_rate}}"
    assert submission.job.spec["display_name"] == f"train {run.result['run_id']}"
    assert submission.trigger.completed[0].conf == {"source": run.result["run_id"]}
    assert submission.on.completed == ["azureml://bridge-demo/mapping/completed"]  # normalised


def test_command_job_is_sent_as_is_and_studio_url_is_none_without_a_workspace(
    bus: LocalServiceBus, generated_runs: dict[str, DagRunResult]
) -> None:
    run = generated_runs["command_job"]
    [submission] = submissions_by_dag(queue_messages(bus, "generated"))["command_job"]

    assert submission.job == CommandJob(
        command="echo hi", environment="azureml:env:1", compute="cpu-cluster"
    )
    assert submission.on.failed == ["azureml://bridge-demo/command/failed"]
    assert run.xcom("submit") == submission.id
    assert "submit:studio_url" in run.result["xcom"]
    assert run.xcom("submit", "studio_url") is None


def test_mapped_tasks_send_one_submission_each_with_their_map_index(
    bus: LocalServiceBus, generated_runs: dict[str, DagRunResult]
) -> None:
    run = generated_runs["mapped_jobs"]
    submissions = submissions_by_dag(queue_messages(bus, "generated"))["mapped_jobs"]

    by_index = {s.origin.map_index: s for s in submissions}
    assert sorted(by_index) == [0, 1]
    assert by_index[0].id != by_index[1].id
    assert [run.xcom(f"submit[{i}]") for i in (0, 1)] == [by_index[0].id, by_index[1].id]
    assert [by_index[i].job.spec["inputs"] for i in (0, 1)] == [  # type: ignore[union-attr]
        {"learning_rate": 0.1},
        {"learning_rate": 0.2},
    ]


@pytest.mark.parametrize(
    ("dag_id", "problem"),
    [
        ("missing_file", r"job file \S*/dags/jobs/missing\.yml not found"),
        (
            "not_a_mapping",
            r"jobs/list\.yml must hold a mapping in Azure ML's YAML job schema, not list",
        ),
        ("local_code", r"code '\./src' is a local folder"),
        (
            "contract_violation",
            r"submission is invalid: trigger\.completed\.0\.dag_id: Field required",
        ),
    ],
)
def test_invalid_job_fails_the_task_without_retries_naming_the_problem(
    generated_runs: dict[str, DagRunResult], dag_id: str, problem: str
) -> None:
    run = generated_runs[dag_id]

    assert run.state == "failed"
    assert run.task("submit")["state"] == "failed"
    assert run.task("submit")["try_number"] == 1  # retries=3, yet no retry: nothing can fix it
    assert re.search(problem, run.log), run.log[-3000:]


def test_invalid_jobs_send_nothing(
    bus: LocalServiceBus, generated_runs: dict[str, DagRunResult]
) -> None:
    sent = submissions_by_dag(queue_messages(bus, "generated"))
    assert sorted(sent) == ["command_job", "mapped_jobs", "mapping_job"]


# --- connections: where the operator finds its queue, and in which order ------------------------

CONNECTION_DAGS = """
from airflow.sdk import dag
from bridge.contracts import CommandJob
from bridge.provider import SubmitAzureMLJobOperator

JOB = CommandJob(command="echo hi", environment="azureml:env:1", compute="cpu-cluster")


def producer(dag_id, **arguments):
    @dag(dag_id=dag_id, schedule=None, default_args={"retries": 3, "retry_delay": 0})
    def send():
        SubmitAzureMLJobOperator(task_id="submit", job=JOB, **arguments)

    send()


producer("by_default_connection", partition_key="{{ ds }}")
producer("by_argument", queue_name="from-argument")
producer("by_database_connection", conn_id="azureml_bridge_database")
producer("by_secrets_backend", conn_id="azureml_bridge_vault")
producer("by_missing_connection", conn_id="azureml_bridge_nowhere")
producer("by_bad_emulator_flag", conn_id="azureml_bridge_bad_flag")
producer("by_emulator_flag_false", conn_id="azureml_bridge_not_emulator")
"""
LOCAL_FILE_BACKEND = ".".join(("airflow", "secrets", "local_filesystem", "LocalFilesystemBackend"))
CONNECTION_DAG_IDS = ["by_default_connection", "by_argument", "by_database_connection",
                      "by_secrets_backend", "by_missing_connection", "by_bad_emulator_flag",
                      "by_emulator_flag_false"]  # fmt: skip
SENDING = ["by_default_connection", "by_argument", "by_database_connection", "by_secrets_backend"]


def bridge_connection(bus: LocalServiceBus, queue: str, use_development_emulator: object) -> str:
    """An `azureml_bridge` connection to the local Service Bus, as `Stack.airflow_connection`
    gives it: Host is the emulator's host:port; the flag as JSON true or a form's text."""
    return json.dumps({
        "conn_type": "azureml_bridge",
        "host": bus.address,
        "schema": queue,
        "extra": {"use_development_emulator": use_development_emulator,
                  "workspace_id": WORKSPACE_ID},
    })  # fmt: skip


@pytest.fixture(scope="module")
def connection_runs(
    bus: LocalServiceBus,
    env_bus: LocalServiceBus,
    migrated_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, DagRunResult]:
    """The same operator, configured seven ways. The environment names another namespace
    (`env_bus`) and a queue of its own ("from-env"), so every submission that lands elsewhere shows
    what took precedence over it."""
    root = tmp_path_factory.mktemp("connections")
    dags = root / "dags"
    dags.mkdir()
    (dags / "producers.py").write_text(textwrap.dedent(CONNECTION_DAGS))
    vault = root / "connections.json"  # Airflow's local-file secrets backend
    vault.write_text(json.dumps({"azureml_bridge_vault": json.loads(
        bridge_connection(bus, "from-secrets-backend", True))}))  # fmt: skip
    extra = {
        **emulator_env(env_bus, "from-env"),
        "AIRFLOW_CONN_AZUREML_BRIDGE_DEFAULT": bridge_connection(bus, "from-connection", True),
        "AIRFLOW_CONN_AZUREML_BRIDGE_BAD_FLAG": bridge_connection(bus, "from-connection", "yes"),
        # Not an emulator: Host must then be a namespace, and the environment's "true" is not
        # the connection's.
        "AIRFLOW_CONN_AZUREML_BRIDGE_NOT_EMULATOR": bridge_connection(
            bus, "from-connection", "false"
        ),
        # Not a secret: Airflow's local-file secrets backend, by class path.
        "AIRFLOW__SECRETS__BACKEND": LOCAL_FILE_BACKEND,
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(vault)}),
        # Connections in the database are encrypted: the CLI that adds one and the run that
        # reads it must share a key (each Airflow home would otherwise make its own).
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
    # One connection in the metadata database, added as an operator would with the CLI; its flag
    # is text, as the connection form's extra field gives it.
    home = root / "prepared"
    home.mkdir()
    shutil.copy(migrated_db, home / "airflow.db")
    subprocess.run(
        [str(AIRFLOW_PYTHON), "-m", "airflow", "connections", "add", "azureml_bridge_database",
         "--conn-json", bridge_connection(bus, "from-database", "true")],
        env=airflow_env(home, dags_folder=dags, extra=extra), check=True, capture_output=True,
        timeout=120,
    )  # fmt: skip
    return run_dags(root, home / "airflow.db", dags / "producers.py", CONNECTION_DAG_IDS, extra)


def test_connections_take_precedence_over_the_environment_and_arguments_over_both(
    bus: LocalServiceBus, env_bus: LocalServiceBus, connection_runs: dict[str, DagRunResult]
) -> None:
    assert {dag_id: connection_runs[dag_id].state for dag_id in SENDING} == dict.fromkeys(
        SENDING, "success"
    )
    landed = {queue: sorted(submissions_by_dag(queue_messages(bus, queue)))
              for queue in ("from-connection", "from-argument", "from-database",
                            "from-secrets-backend", "from-env")}  # fmt: skip
    assert landed == {
        "from-connection": ["by_default_connection"],  # AIRFLOW_CONN_* over BRIDGE_* variables
        "from-argument": ["by_argument"],  # queue_name= over the connection
        "from-database": ["by_database_connection"],  # the metadata database
        "from-secrets-backend": ["by_secrets_backend"],  # a secrets backend
        "from-env": [],
    }
    # The connections' Host, not the environment's namespace, is where every one of them went.
    assert {queue: env_bus.namespace.count(queue) for queue in QUEUES} == dict.fromkeys(QUEUES, 0)
    sent = connection_runs["by_default_connection"]
    # partition_key is templated: "{{ ds }}" arrives as the run's date.
    [by_default] = submissions_by_dag(queue_messages(bus, "from-connection"))[
        "by_default_connection"
    ]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", by_default.partition_key or ""), by_default
    assert "Sending through Airflow connection azureml_bridge_default" in sent.log
    # The connection's workspace id gives the Studio link.
    assert sent.xcom("submit", "studio_url").endswith(f"?wsid={WORKSPACE_ID}")


def test_a_connection_named_but_missing_fails_the_task_naming_it(
    connection_runs: dict[str, DagRunResult],
) -> None:
    missing = connection_runs["by_missing_connection"]
    assert missing.state == "failed"
    assert missing.task("submit")["try_number"] == 1
    assert "Airflow has no connection 'azureml_bridge_nowhere'" in missing.log


@pytest.mark.parametrize(
    ("dag_id", "problem"),
    [
        ("by_bad_emulator_flag", r"use_development_emulator must be true or false"),
        # "false": Host is then a namespace, and a namespace takes no port.
        ("by_emulator_flag_false",
         r"BRIDGE_SERVICEBUS_NAMESPACE \(or the azureml_bridge connection's host\) has a port: "
         r"Azure's namespaces"),
    ],
)  # fmt: skip
def test_a_connection_whose_emulator_flag_is_wrong_fails_the_task_without_retries(
    connection_runs: dict[str, DagRunResult], dag_id: str, problem: str
) -> None:
    run = connection_runs[dag_id]
    assert run.state == "failed"
    assert run.task("submit")["state"] == "failed"
    assert run.task("submit")["try_number"] == 1  # retries=3, yet no retry: nothing can fix it
    assert re.search(problem, run.log), run.log[-3000:]
