"""The audit trail through OpenTelemetry to Application Insights, checked at the HTTP boundary.

With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, the bridge configures
`azure-monitor-opentelemetry`, as the Function App does in Azure. The connection string names the
ingestion endpoint; here that is a loopback server standing in for Application Insights, which
keeps what the exporter posts to `/v2.1/track`. The bridge runs in a child process, because
OpenTelemetry's providers are global and configured once per process.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.audit import TraceContext
from bridge.contracts import Submission
from bridge.local.process import JsonHandler, LoopbackServer, child_environment, serve
from bridge.local.stack import Stack
from bridge.settings import APPLICATIONINSIGHTS_CONNECTION_STRING
from tests.integration.conftest import own_ledger

pytestmark = pytest.mark.integration

# The child: the production composition, one submission, then export what is buffered.
CHILD = """
import os
import bridge.local  # the stack's credential for its Azure ML emulator
from bridge.composition import build
from bridge.settings import Settings
from bridge.adapters.telemetry import flush
bridge = build(Settings.from_env(os.environ))
print(bridge.submit(os.environb[b"SUBMISSION"], "telemetry-test").result)
flush()
"""


class Ingestion:
    """What Application Insights' ingestion endpoint received: one envelope per item."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        received = self.envelopes

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                items = json.loads(body) if self.path.startswith("/v2.1/track") else []
                received.extend(items)
                self.send_json(
                    200, {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
                )

        self.server = serve(LoopbackServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e.get("tags", {}).get("ai.operation.id") == trace_id]


@pytest.fixture
def ingestion() -> Iterator[Ingestion]:
    endpoint = Ingestion()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def test_spans_and_audit_records_reach_application_insights_in_the_senders_trace(
    loop_stack: Stack, ingestion: Ingestion
) -> None:
    sent = TraceContext.new()
    job = Submission.model_validate(
        {
            "origin": {"dag_id": "telemetry", "run_id": "r1", "task_id": "t"},
            "job": {"command": "sleep 300", "environment": "azureml:env:1",
                    "compute": "cpu-cluster"},
            "traceparent": sent.traceparent,
        }
    )  # fmt: skip
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000001;"
        f"IngestionEndpoint={ingestion.url}"
    )
    settings = own_ledger(loop_stack, "telemetry")
    env = child_environment(
        settings.environment(),
        {APPLICATIONINSIGHTS_CONNECTION_STRING: connection, "SUBMISSION": job.to_json()},
    )
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "created"

    mine = ingestion.of_trace(sent.trace_id)
    kinds = {e["data"]["baseType"] for e in mine}
    assert "RequestData" in kinds and "MessageData" in kinds, kinds
    [span] = [e for e in mine if e["data"]["baseType"] == "RequestData"]
    assert span["data"]["baseData"]["name"] == "bridge submit"
    assert span["tags"]["ai.operation.parentId"] == sent.span_id  # continues the sender's span
    assert span["data"]["baseData"]["properties"]["bridge.job"] == job.id
    messages = [e["data"]["baseData"] for e in mine if e["data"]["baseType"] == "MessageData"]
    texts = [m["message"] for m in messages]
    assert any(text.startswith("accepted: submission") for text in texts), texts
    # Each audit field is a custom dimension of its own, to query in Application Insights.
    [created] = [m["properties"] for m in messages
                 if m["properties"].get("audit.operation") == "jobs.create_or_update"]  # fmt: skip
    assert created["audit.system"] == "azureml" and created["audit.target"] == job.id
    assert created["audit.status"] in ("200", "201")
    assert created["audit.identity"] == "local emulator token"
    assert created["audit.trace_id"] == sent.trace_id
    # Each record sits inside the bridge's span, not merely in the trace.
    span_id = span["data"]["baseData"]["id"]
    assert {e["tags"].get("ai.operation.parentId") for e in mine
            if e["data"]["baseType"] == "MessageData"} == {span_id}  # fmt: skip
