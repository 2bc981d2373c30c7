"""The whole local stack, on loopback, started and stopped as one: Azurite, the local Service Bus,
the Azure ML emulator, the bridge's dev host and a real Airflow 3 with the example DAGs; on request
(`StackOptions.production_workspace`) a second workspace with a bridge of its own.

Every port is fresh, so two stacks on one machine do not collide; every process is stopped on exit
(Ctrl-C and SIGTERM included) in reverse order of start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
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
from bridge.local.airflow import BRIDGE_ROLE, BRIDGE_USER, LocalAirflow
from bridge.local.azureml import DOCUMENTED, PROFILES, AzureMLEmulator
from bridge.local.azurite import Azurite
from bridge.local.dead_letter import DeadLetterContainer
from bridge.local.devhost import DevHost
from bridge.local.identity import LocalApp, LocalIdentity, LocalPrincipal
from bridge.local.keyvault import LocalKeyVault
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
from bridge.settings import ENTRA, Settings
from bridge.signing import KEY_LIFETIME_DAYS, new_key

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "examples" / "dags"
QUEUE = "submissions"
# A second workspace, when StackOptions asks for one: its own bridge, reached by its own queue
# on the same Service Bus and by the Airflow connection `azureml_bridge_prod`.
PRODUCTION_QUEUE = "submissions-prod"
PRODUCTION_CONNECTION = "azureml_bridge_prod"
PRODUCTION_LEDGER_TABLE = "bridgeledgerprod"
PRODUCTION_SIGNING_KEY_SECRET = "signing-key-prod"  # pragma: allowlist secret (a name)
LOCAL_RECONCILE_SCHEDULE = "*/2 * * * * *"  # every 2 seconds
LOCAL_RECONCILE_AFTER_SECONDS = 5.0
# Airflow's app registration in Entra mode, and the app role the bridge's identity holds in it.
AIRFLOW_APP = "airflow-azureml-bridge"
AIRFLOW_APP_ROLE = "AzureMLBridge"
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
    # The name of a second (production) workspace, with a bridge of its own; None: no second one.
    production_workspace: str | None = None
    # How the bridge signs in to Airflow: "password" (its own user), or "entra" (its managed
    # identity's token from the local identity service; no Airflow secret in its settings).
    airflow_auth: Literal["password", "entra"] = "password"
    # The signing key as a secret in a local Key Vault, rotated by the bridge on its near-expiry
    # event, instead of the two key settings.
    key_vault: bool = False


@dataclass
class Workspace:
    """A second workspace and its own bridge: the emulator, the dev host that runs the bridge's
    functions for it, their settings and the queue its submissions come by."""

    emulator: AzureMLEmulator
    devhost: DevHost
    settings: Settings
    bridge: Bridge
    queue_name: str


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
    production: Workspace | None = None
    identity: LocalIdentity | None = None  # Entra ID, when the bridge signs in to Airflow by it
    key_vault: LocalKeyVault | None = None  # where the signing key lives, when it is in one

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
        variable), which is how the local Airflow's operator finds the queue; and, with a
        production workspace, `azureml_bridge_prod` for its queue."""
        connection = {
            "conn_type": "azureml_bridge",
            "host": self.servicebus.address,
            "schema": self.queue_name,
            "extra": {
                "use_development_emulator": True,
                "workspace_id": self.emulator.workspace_id,
            },
        }
        connections = {"AIRFLOW_CONN_AZUREML_BRIDGE_DEFAULT": json.dumps(connection)}
        if self.production is not None:
            production = {
                **connection,
                "schema": self.production.queue_name,
                "extra": {
                    "use_development_emulator": True,
                    "workspace_id": self.production.emulator.workspace_id,
                },
            }
            key = f"AIRFLOW_CONN_{PRODUCTION_CONNECTION.upper()}"
            connections[key] = json.dumps(production)
        return connections


@contextmanager
def running_stack(options: StackOptions | None = None) -> Iterator[Stack]:
    options = options or StackOptions()
    workdir = options.workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, _stop_on_sigterm():
        azurite = stack.enter_context(Azurite(workdir))
        servicebus = stack.enter_context(LocalServiceBus())
        _submission_queue(servicebus, QUEUE)
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
        identity = _identity(stack) if options.airflow_auth == ENTRA else None
        settings = Settings(
            **emulator.azureml_settings(),
            ledger_connection_string=azurite.connection_string,
            airflow_url=f"http://127.0.0.1:{airflow_port}",
            signing_key=secrets.token_hex(32),
            policy_json=options.policy_json,
            reconcile_schedule=options.reconcile_schedule,
            reconcile_after_seconds=options.reconcile_after_seconds,
        )
        settings = _airflow_sign_in(settings, identity)
        key_vault = None
        if options.key_vault:
            key_vault = stack.enter_context(
                LocalKeyVault(workdir / "keyvault", event_key=event_key)
            )
            settings = _signing_key_in(key_vault, settings)
        bridge, devhost = _bridge_host(
            stack,
            settings,
            servicebus=servicebus,
            queue=QUEUE,
            event_key=event_key,
            emulator=emulator,
        )
        running = Stack(azurite, servicebus, emulator, devhost, settings, bridge, None)
        running.identity = identity
        running.key_vault = key_vault
        if key_vault is not None:  # the vault's system topic, subscribed to the bridge's webhook
            key_vault.topic.webhook_url = devhost.webhook_url
        if options.production_workspace:
            running.production = _production(
                stack, running, options=options, workdir=workdir, dead_letters=dead_letters
            )
        if options.airflow:
            running.airflow = stack.enter_context(
                LocalAirflow(
                    workdir / "airflow",
                    options.dags_folder,
                    port=airflow_port,
                    database_url=options.database_url,
                    bridge_password=settings.airflow_password or None,
                    extra_env={**running.airflow_connection, **options.extra_airflow_env},
                    triggerer=options.airflow_triggerer,
                    entra=(
                        identity.airflow_options(f"{AIRFLOW_APP_ROLE}={BRIDGE_ROLE}")
                        if identity is not None
                        else None
                    ),
                )
            )
        yield running


def _identity(stack: ExitStack) -> LocalIdentity:
    """Entra ID on loopback: Airflow's app registration, the bridge's managed identity with the
    app role, and App Service's identity variables set for this process (the bridge runs in it,
    as in the Function App's worker), restored when the stack stops."""
    app = LocalApp(AIRFLOW_APP)
    identity = stack.enter_context(
        LocalIdentity(app, LocalPrincipal(roles={app.client_id: [AIRFLOW_APP_ROLE]}))
    )
    for name, value in identity.environment().items():
        previous = os.environ.get(name)
        os.environ[name] = value
        stack.callback(_restore, name, previous)
    return identity


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _airflow_sign_in(settings: Settings, identity: LocalIdentity | None) -> Settings:
    """How the bridge signs in to Airflow: its least-privileged user with this run's password
    (not the admin: see LocalAirflow), or, in Entra mode, the app registration and the identity
    alone."""
    if identity is None:
        return dataclasses.replace(
            settings, airflow_username=BRIDGE_USER, airflow_password=secrets.token_urlsafe(12)
        )
    return dataclasses.replace(
        settings,
        airflow_auth=ENTRA,
        airflow_audience=identity.app.identifier_uri,
        managed_identity_client_id=identity.principal.client_id,
    )


def _signing_key_in(key_vault: LocalKeyVault, settings: Settings) -> Settings:
    """The signing key as Key Vault holds it in Azure: a secret whose first version expires in
    `KEY_LIFETIME_DAYS`; the bridge reads it with its identity and rotates it."""
    key_vault.set(settings.signing_key_secret, new_key(),
                  exp=time.time() + KEY_LIFETIME_DAYS * 86400)  # fmt: skip
    return dataclasses.replace(
        settings,
        signing_key="",
        key_vault_url=key_vault.url,
        key_vault_ca_file=str(key_vault.certificate.authority),
    )


def _bridge_host(
    stack: ExitStack,
    settings: Settings,
    *,
    servicebus: LocalServiceBus,
    queue: str,
    event_key: str,
    emulator: AzureMLEmulator,
) -> tuple[Bridge, DevHost]:
    """A bridge on these settings, served by a dev host on `queue`; the emulator's events go to
    its webhook."""
    bridge = build(settings)
    devhost = stack.enter_context(
        DevHost(
            lambda: bridge,
            settings,
            servicebus_connection_string=servicebus.connection_string,
            queue_name=queue,
            event_key=event_key,
        )
    )
    emulator.webhook_url = devhost.webhook_url
    return bridge, devhost


def _submission_queue(servicebus: LocalServiceBus, name: str) -> None:
    """A queue as Azure gets it (infra's Bicep): its lock, deliveries and duplicate detection."""
    queue = QueueOptions.from_bicep()
    servicebus.create_queue(
        name,
        lock_duration=queue.lock_duration_seconds,
        max_delivery_count=queue.max_delivery_count,
        duplicate_detection_window=queue.duplicate_detection_window_seconds,
    )


def _production(
    stack: ExitStack,
    staging: Stack,
    *,
    options: StackOptions,
    workdir: Path,
    dead_letters: DeadLetterContainer,
) -> Workspace:
    """A second workspace with its own bridge, as a second Function App would be: its own queue,
    ledger table, signing key and Event Grid subscription; the same Airflow (and bridge user), the
    same Azurite and Service Bus, and the first workspace's registries."""
    assert options.production_workspace
    servicebus = staging.servicebus
    _submission_queue(servicebus, PRODUCTION_QUEUE)
    event_key = secrets.token_urlsafe(16)
    emulator = stack.enter_context(
        AzureMLEmulator(
            workdir / "azureml-prod",
            event_schema=options.event_schema,
            access_key=event_key,
            profile=PROFILES[options.azure_profile],
            dead_letter=dead_letters.write,
            workspace=options.production_workspace,
            registries=staging.emulator.registries,
        )
    )
    settings = dataclasses.replace(
        staging.settings,
        **emulator.azureml_settings(),
        ledger_table=PRODUCTION_LEDGER_TABLE,
        signing_key=secrets.token_hex(32),
    )
    if staging.key_vault is not None:  # a key of its own, in the same local vault
        settings = _signing_key_in(
            staging.key_vault,
            dataclasses.replace(settings, signing_key_secret=PRODUCTION_SIGNING_KEY_SECRET),
        )
    bridge, devhost = _bridge_host(
        stack,
        settings,
        servicebus=servicebus,
        queue=PRODUCTION_QUEUE,
        event_key=event_key,
        emulator=emulator,
    )
    return Workspace(emulator, devhost, settings, bridge, PRODUCTION_QUEUE)


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
