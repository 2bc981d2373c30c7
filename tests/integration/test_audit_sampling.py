"""Audit records survive sampling: the bridge's OpenTelemetry export keeps every span and record.

host.json's `samplingSettings` configure the Functions host's Application Insights SDK, in the
host process; the bridge's records leave the worker process through its own exporter, straight
to the ingestion endpoint (docs/audit-sampling.md). What could sample them is that exporter's
pipeline: azure-monitor-opentelemetry samples spans at 5 traces per second unless told otherwise,
and can drop the log records of a sampled-out trace. These tests run the real pipeline, in a child
process (OpenTelemetry's providers are global), against the loopback ingestion stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.local.process import child_environment
from bridge.settings import APPLICATIONINSIGHTS_CONNECTION_STRING
from tests.integration.test_telemetry import Ingestion

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# The child: a burst of invocations, each with one decision record, from senders whose traces are
# sampled (flags 01) and not (flags 00); then what the configured provider samples with.
CHILD = """
import json, os
from opentelemetry import trace
from bridge.adapters.telemetry import AzureMonitorSpans, flush
from bridge.audit import Audit, Decision, TraceContext, decide

audit = Audit(spans=AzureMonitorSpans(os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"]))
flags = []
for n in range(int(os.environ["BURST"])):
    sender = TraceContext(TraceContext.new().trace_id, TraceContext.new().span_id, "0" + str(n % 2))
    with audit.span("submit", parent=sender, job=f"job-{n}") as span:
        decide(Decision.ACCEPTED, f"submission {n}")
        flags.append(span.context.flags)
flush()
sampler = trace.get_tracer_provider().sampler.get_description()
print(json.dumps({"sampler": sampler, "flags": flags}))
"""


@pytest.fixture
def endpoint() -> Iterator[Ingestion]:
    ingestion = Ingestion()
    yield ingestion
    ingestion.server.shutdown()
    ingestion.server.server_close()


def burst(endpoint: Ingestion, size: int, **environment: str) -> dict[str, Any]:
    connection = (
        f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint={endpoint.url}"
    )
    env = child_environment()
    for inherited in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        env.pop(inherited, None)  # this test's process may have its own; the child gets ours
    env |= {APPLICATIONINSIGHTS_CONNECTION_STRING: connection, "BURST": str(size), **environment}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def items(endpoint: Ingestion, base_type: str) -> list[dict[str, Any]]:
    """What the ingestion endpoint received of one telemetry type (RequestData: spans,
    MessageData: log records)."""
    return [e["data"]["baseData"] for e in endpoint.envelopes if e["data"]["baseType"] == base_type]


def requests_of(endpoint: Ingestion) -> list[dict[str, Any]]:
    return [r for r in items(endpoint, "RequestData") if r["name"] == "bridge submit"]


def records_of(endpoint: Ingestion) -> list[dict[str, Any]]:
    return [
        m
        for m in items(endpoint, "MessageData")
        if m.get("properties", {}).get("audit.decision") == "accepted"
    ]


def test_a_burst_of_invocations_keeps_every_span_and_every_record(endpoint: Ingestion) -> None:
    from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler

    # Far above the distro's default of 5 traces per second: its rate-limited sampler would
    # drop most of these spans.
    size = 200
    result = burst(endpoint, size)

    # The process's real tracer provider samples with ratio 1.0: every trace, whatever the
    # sender's flags say.
    assert result["sampler"] == ApplicationInsightsSampler(1.0).get_description()
    assert result["flags"] == ["01"] * size
    requests = requests_of(endpoint)
    assert len(requests) == size
    assert {r["properties"]["bridge.job"] for r in requests} == {f"job-{n}" for n in range(size)}
    assert len(records_of(endpoint)) == size


def test_records_are_exported_even_when_a_sampler_drops_every_span(endpoint: Ingestion) -> None:
    # OTEL_TRACES_SAMPLER, when an operator sets it, decides over the bridge's sampling ratio (the
    # distro reads it last). Spans then follow it; the records must not.
    size = 20
    result = burst(endpoint, size, OTEL_TRACES_SAMPLER="always_off")

    assert result["flags"] == ["00"] * size
    assert requests_of(endpoint) == []
    records = records_of(endpoint)
    assert len(records) == size
    # The bridge says so where the records go.
    warnings = [
        m["message"]
        for m in items(endpoint, "MessageData")
        if m.get("severityLevel") in (2, "Warning")  # an enum, sent as its number
    ]
    assert any("OTEL_TRACES_SAMPLER" in message for message in warnings), warnings


def test_application_insights_has_no_ingestion_sampling_configured() -> None:
    # Ingestion sampling, the one sampling step after the exporter, is a property of the
    # Application Insights resource (SamplingPercentage); Bicep leaves it at 100 (off).
    monitoring = (ROOT / "infra" / "modules" / "monitoring.bicep").read_text()
    assert "SamplingPercentage" not in monitoring
