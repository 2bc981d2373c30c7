from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridge.contracts import Submission
from bridge.local.airflow import fresh_postgres_database
from bridge.local.process import child_environment
from bridge.local.servicebus import LocalServiceBus
from bridge.local.stack import EXAMPLE_DAGS, Stack, StackOptions, running_stack
from bridge.provider.senders import ServiceBusSender
from bridge.settings import Settings

HERE = Path(__file__).parent
LOOP_POLICY = (
    '{"allowed_computes": ["cpu-cluster"], "max_instance_count": 4,'
    ' "allowed_instance_types": ["Standard_DS3_v2", "Standard_F2s_v2"],'
    ' "allowed_model_prefixes": ["loop-"], "required_model_tags": {"evaluation": "passed"},'
    ' "allowed_registries": ["loop-registry"]}'
)
RECONCILE_AFTER_SECONDS = 2.0
# A pipeline of two inline command steps on the loop policy's compute, in Azure ML's YAML schema.
PIPELINE_SPEC: dict[str, Any] = {
    "type": "pipeline",
    "experiment_name": "pipelines",
    "settings": {"default_compute": "azureml:cpu-cluster"},
    "jobs": {
        "prep": {"type": "command", "command": "echo prep", "environment": "azureml:env:1"},
        "train": {"type": "command", "command": "echo train", "environment": "azureml:env:1"},
    },
}
T = TypeVar("T")


@pytest.fixture(scope="session")
def loop_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole local stack, once per session: the example DAGs plus the tests' own."""
    root = tmp_path_factory.mktemp("loop")
    dags = root / "dags"
    dags.mkdir()
    for source in [*EXAMPLE_DAGS.glob("*.py"), *(HERE / "loop_dags").glob("*.py")]:
        shutil.copy(source, dags / source.name)
    (root / "jobs").symlink_to(EXAMPLE_DAGS.parent / "jobs")  # the examples' ../jobs/*.yml
    options = StackOptions(
        workdir=root / "stack",
        dags_folder=dags,
        # The profile tests post bursts of events and trigger runs: on SQLite the scheduler can
        # die of "database is locked" under them (seen on a clean clone), on PostgreSQL it does not.
        database_url=fresh_postgres_database("bridge_loop"),
        policy_json=LOOP_POLICY,
        # Reconciliation as in Azure, only sooner: a sweep every second, 2 s after acceptance.
        reconcile_schedule="* * * * * *",
        reconcile_after_seconds=RECONCILE_AFTER_SECONDS,
    )
    with running_stack(options) as stack:
        assert stack.airflow is not None
        stack.airflow.wait_for_dags(
            [
                "azureml_train",
                "azureml_model_ready",
                "loop_assets",
                "loop_triggered",
                "loop_partitioned_consumer",
                "loop_lifecycle_assets",
            ],
            timeout=90,
        )
        yield stack


class Clock:
    """A clock a test moves by hand (`Bridge.clock`), so that leases and backoff take no wall
    time; it starts at the real time, so what it stamps still reads as now to Airflow."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def bus() -> Iterator[LocalServiceBus]:
    """A local Service Bus of the module's own (the stack has one too: `loop_stack.servicebus`)."""
    with LocalServiceBus() as running:
        yield running


_queue_numbers = itertools.count(1)


def new_queue(
    bus: LocalServiceBus,
    *,
    lock_duration: float = 60.0,
    max_delivery_count: int = 10,
    duplicate_detection_window: float | None = None,
) -> str:
    """A queue of its own for each test, so that no test sees another's messages."""
    name = f"queue-{next(_queue_numbers)}"
    bus.create_queue(
        name,
        lock_duration=lock_duration,
        max_delivery_count=max_delivery_count,
        duplicate_detection_window=duplicate_detection_window,
    )
    return name


def eventually(probe: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.25)


def asset_events(stack: Stack, uri: str) -> list[Any]:
    """Every event Airflow holds for the asset with exactly this URI."""
    from airflow_client.client import AssetApi

    assert stack.airflow is not None
    api = AssetApi(stack.airflow.client())
    asset_id = stack.airflow.rest().asset_id(uri)
    found: list[Any] = []
    while True:  # every page: a session's tests post hundreds of events on the same assets
        page = api.get_asset_events(asset_id=asset_id, limit=100, offset=len(found)).asset_events
        found += page
        if len(page) < 100:
            return found


def job_events(stack: Stack, uri: str, job_name: str) -> list[Any]:
    """The asset events Airflow holds on `uri` for one job."""
    return [e for e in asset_events(stack, uri) if e.extra.get("job_name") == job_name]


def job_tags(stack: Stack, job_name: str) -> dict[str, str]:
    """The tags the bridge put on a job (signature included), as Azure ML received them."""
    job = eventually(lambda: stack.emulator.job(job_name), what=f"job {job_name} created")
    return dict(job.properties.get("tags") or {})


def own_ledger(stack: Stack, prefix: str, **changes: Any) -> Settings:
    """The loop stack's settings with a ledger table of their own, out of the dev host's reach (its
    reconcile timer sweeps only its own table); no sweep of theirs before an hour either."""
    return dataclasses.replace(
        stack.settings,
        ledger_table=f"{prefix}{secrets.token_hex(4)}",
        **{"reconcile_after_seconds": 3600.0, **changes},
    )


def run_bridge(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The `bridge` command line, with these settings as its environment (as an operator's)."""
    full = child_environment(settings.environment(), env or {})
    command = os.path.join(os.path.dirname(sys.executable), "bridge")
    return subprocess.run([command, *args], env=full, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.fixture
def identity_with_nothing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real azure-identity `EnvironmentCredential` with no variable to go on: it refuses every
    token at once, as an expired or missing workload credential does, without any network."""
    from azure.identity import EnvironmentCredential

    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                 "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return EnvironmentCredential()


def send(stack: Stack, *jobs: Submission) -> None:
    """Queue submissions as the operator does locally: with its Service Bus sender, on the
    stack's local Service Bus."""
    sender = ServiceBusSender(stack.servicebus.address, stack.queue_name, development_emulator=True)
    try:
        for job in jobs:
            sender.send(job)
    finally:
        sender.close()
