"""The whole local stack, on loopback, started and stopped as one: Azurite, the local Service Bus,
the Azure ML emulator, the bridge's dev host and a real Airflow 3 with the example DAGs.

Every port is fresh, so two stacks on one machine do not collide; every process is stopped on exit
(Ctrl-C and SIGTERM included) in reverse order of start.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

from bridge.composition import build
from bridge.local.airflow import BRIDGE_USER, LocalAirflow
from bridge.local.azureml import DOCUMENTED, PROFILES, AzureMLEmulator
from bridge.local.azurite import Azurite
from bridge.local.dead_letter import DeadLetterContainer
from bridge.local.devhost import DevHost
from bridge.local.process import free_port
from bridge.local.servicebus import LocalServiceBus
from bridge.local.trigger import QueueOptions
from bridge.provider.senders import (
    SERVICEBUS_EMULATOR,
    SERVICEBUS_NAMESPACE,
    SUBMISSION_QUEUE,
    WORKSPACE_ID,
)
from bridge.service import Bridge
from bridge.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "examples" / "dags"
QUEUE = "submissions"
LOCAL_RECONCILE_SCHEDULE = "*/2 * * * * *"  # every 2 seconds
LOCAL_RECONCILE_AFTER_SECONDS = 5.0
log = logging.getLogger("bridge.stack")


@dataclass
class StackOptions:
    workdir: Path = REPO / ".stack"
    dags_folder: Path = EXAMPLE_DAGS
    database_url: str | None = None  # PostgreSQL for bursty loads; SQLite in workdir otherwise
    event_schema: Literal["eventgrid", "cloudevents"] = "eventgrid"
    policy_json: str | None = None
    airflow: bool = True
    airflow_triggerer: bool = False  # for asset watchers (the benchmark's queue-polling peer)
    extra_airflow_env: Mapping[str, str] = field(default_factory=dict)
    # More queues on the local Service Bus, with Service Bus's defaults, there before Airflow
    # starts (the benchmark's asset watchers read theirs as soon as the triggerer runs them).
    servicebus_queues: Sequence[str] = ()
    # Reconciliation as the Function App runs it, only sooner than Azure's defaults (every 5
    # minutes, 10 minutes' grace), so that an outcome no event told shows up within seconds.
    reconcile_schedule: str = LOCAL_RECONCILE_SCHEDULE
    reconcile_after_seconds: float = LOCAL_RECONCILE_AFTER_SECONDS
    # How the Azure ML emulator behaves: documented, observed or lossy (bridge.local.azureml).
    azure_profile: str = DOCUMENTED.name


@dataclass
class Stack:
    """Handles to every running part, for the demo, `make dev` and the integration tests."""

    azurite: Azurite
    servicebus: LocalServiceBus
    emulator: AzureMLEmulator
    devhost: DevHost
    settings: Settings
    bridge: Bridge
    airflow: LocalAirflow | None
    queue_name: str = QUEUE

    @property
    def queue_env(self) -> dict[str, str]:
        """What the Airflow side (the operator) needs to reach the local submission queue: the
        namespace's address, with the development emulator's plain TCP and placeholder key."""
        return {
            SERVICEBUS_NAMESPACE: self.servicebus.address,
            SERVICEBUS_EMULATOR: "true",
            SUBMISSION_QUEUE: self.queue_name,
            WORKSPACE_ID: self.emulator.workspace_id,
        }

    @property
    def airflow_connection(self) -> dict[str, str]:
        """The same, as the Airflow connection `azureml_bridge_default` (an `AIRFLOW_CONN_*`
        variable), which is how the local Airflow's operator finds the queue."""
        connection = {
            "conn_type": "azureml_bridge",
            "host": self.servicebus.address,
            "schema": self.queue_name,
            "extra": {
                "use_development_emulator": True,
                "workspace_id": self.emulator.workspace_id,
            },
        }
        return {"AIRFLOW_CONN_AZUREML_BRIDGE_DEFAULT": json.dumps(connection)}


@contextmanager
def running_stack(options: StackOptions | None = None) -> Iterator[Stack]:
    options = options or StackOptions()
    workdir = options.workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, _stop_on_sigterm():
        azurite = stack.enter_context(Azurite(workdir))
        servicebus = stack.enter_context(LocalServiceBus())
        queue = QueueOptions.from_bicep()  # the queue Azure gets: lock, deliveries, duplicates
        servicebus.create_queue(
            QUEUE,
            lock_duration=queue.lock_duration_seconds,
            max_delivery_count=queue.max_delivery_count,
            duplicate_detection_window=queue.duplicate_detection_window_seconds,
        )
        for name in options.servicebus_queues:
            servicebus.create_queue(name)
        dead_letters = DeadLetterContainer(azurite.connection_string)
        stack.callback(dead_letters.close)
        airflow_port = free_port()
        event_key = secrets.token_urlsafe(16)
        emulator = stack.enter_context(
            AzureMLEmulator(
                workdir / "azureml",
                event_schema=options.event_schema,
                access_key=event_key,
                profile=PROFILES[options.azure_profile],
                dead_letter=dead_letters.write,
            )
        )
        settings = Settings(
            **emulator.azureml_settings(),
            ledger_connection_string=azurite.connection_string,
            airflow_url=f"http://127.0.0.1:{airflow_port}",
            airflow_username=BRIDGE_USER,  # least privilege, not the admin: see LocalAirflow
            airflow_password=secrets.token_urlsafe(12),  # this run's: see LocalAirflow
            signing_key=secrets.token_hex(32),
            policy_json=options.policy_json,
            reconcile_schedule=options.reconcile_schedule,
            reconcile_after_seconds=options.reconcile_after_seconds,
        )
        bridge = build(settings)
        devhost = stack.enter_context(
            DevHost(
                lambda: bridge,
                settings,
                servicebus_connection_string=servicebus.connection_string,
                queue_name=QUEUE,
                event_key=event_key,
            )
        )
        emulator.webhook_url = devhost.webhook_url
        running = Stack(azurite, servicebus, emulator, devhost, settings, bridge, None)
        if options.airflow:
            running.airflow = stack.enter_context(
                LocalAirflow(
                    workdir / "airflow",
                    options.dags_folder,
                    port=airflow_port,
                    database_url=options.database_url,
                    bridge_password=settings.airflow_password,
                    extra_env={**running.airflow_connection, **options.extra_airflow_env},
                    triggerer=options.airflow_triggerer,
                )
            )
        yield running


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ExitStack stops every child process."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: Callable[[int, FrameType | None], object] | int | None = signal.getsignal(
        signal.SIGTERM
    )
    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: the caller handles signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
