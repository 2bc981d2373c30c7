"""`bridge serve`: one dev host on its own, as one Function App instance: the webhook, the Service
Bus trigger and the reconcile timer, on the settings in the environment, until SIGTERM or Ctrl-C.
The trigger's connection is `BRIDGE_SERVICEBUS`, a development emulator's connection string, as
the Functions host takes one locally (in Azure the same connection is identity-based:
`BRIDGE_SERVICEBUS__fullyQualifiedNamespace`).

The chaos run starts several of these against one ledger and one Airflow. A chaos run may also
ask a process to kill itself right after Airflow acted and before the ledger settled
(`crash_after_effect`): that fault is injected by wrapping the Airflow adapter here, in the test
build, never by a branch in the production path.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from bridge.composition import build
from bridge.local.devhost import DevHost
from bridge.ports import Airflow
from bridge.settings import SERVICEBUS_CONNECTION, SUBMISSION_QUEUE, Settings

EVENT_KEY = "BRIDGE_LOCAL_EVENT_KEY"


class CrashingAirflow:
    """The Airflow port, but the process dies (SIGKILL) right after a write, with probability p."""

    def __init__(self, inner: Airflow, probability: float, seed: int) -> None:
        self.inner = inner
        self.probability = probability
        self._random = random.Random(seed)

    def post_asset_event(
        self, uri: str, extra: Mapping[str, Any], partition_key: str | None = None
    ) -> None:
        self.inner.post_asset_event(uri, extra, partition_key)
        self._maybe_die()

    def asset_event_posted(self, uri: str, effect_id: str, since: float) -> bool:
        return self.inner.asset_event_posted(uri, effect_id, since)

    def has_asset(self, uri: str) -> bool:
        return self.inner.has_asset(uri)

    def trigger_dag_run(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> bool:
        created = self.inner.trigger_dag_run(dag_id, run_id, conf)
        self._maybe_die()
        return created

    def _maybe_die(self) -> None:
        if self._random.random() < self.probability:
            os.kill(os.getpid(), signal.SIGKILL)  # between Airflow's commit and the ledger's


def serve(
    port: int,
    *,
    lease_seconds: float | None = None,
    ambiguity_hold: float | None = None,
    crash_after_effect: float = 0.0,
) -> int:
    settings = Settings.from_env(os.environ)
    bridge = build(settings)
    # The chaos run shortens both, so that a crash or a lost reply costs seconds, not minutes.
    if lease_seconds is not None:
        bridge.lease_seconds = lease_seconds
    if ambiguity_hold is not None:
        bridge.ambiguity_hold = ambiguity_hold
    if crash_after_effect:
        bridge.airflow = CrashingAirflow(bridge.airflow, crash_after_effect, seed=os.getpid())
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host = DevHost(
        lambda: bridge,
        settings,
        servicebus_connection_string=os.environ[SERVICEBUS_CONNECTION],
        queue_name=os.environ.get(SUBMISSION_QUEUE) or "submissions",
        port=port,
        event_key=os.environ.get(EVENT_KEY) or None,
    )
    with host:
        print(f"serving {host.webhook_url}", flush=True)
        stopped.wait()
    return 0
