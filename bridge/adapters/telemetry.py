"""OpenTelemetry to Application Insights (`azure-monitor-opentelemetry`): the audit trail's spans.

Used when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set (Bicep sets it on the Function App).
Each bridge span becomes an OpenTelemetry span continuing the sender's trace, so Application
Insights shows the operator's task, the bridge's submission, the job's event and the downstream
run under one operation id; the `bridge` loggers' records (the audit records among them) are
exported as traces inside their span, with the audit fields as custom dimensions. The Azure SDK
and urllib3 instrumentations add each HTTP call as a dependency of the current span.

Configured once per process: OpenTelemetry's providers are global. Imported only when the
setting is present (it costs about half a second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.audit import OpenSpan, TraceContext

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_lock = threading.Lock()
_configured: list[str] = []  # the connection string OpenTelemetry was configured with, once


@dataclass
class _OtelSpan:
    context: TraceContext
    span: Any
    token: object

    def end(self, error: str | None) -> None:
        from opentelemetry import context, trace

        if error:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        self.span.end()
        context.detach(self.token)  # type: ignore[arg-type]


class AzureMonitorSpans:
    """`bridge.audit.Spans` on OpenTelemetry, exported to Application Insights."""

    def __init__(
        self, connection_string: str, credential: TokenCredential | None = None, **options: Any
    ) -> None:
        from opentelemetry import trace

        with _lock:
            if not _configured:
                from azure.monitor.opentelemetry import configure_azure_monitor

                # Application Insights takes Entra ID tokens only (local auth is off in Bicep):
                # the exporter asks the Function App's identity for one.
                configure_azure_monitor(
                    connection_string=connection_string,
                    credential=credential,
                    logger_name="bridge",
                    enable_live_metrics=False,
                    # The audit trail is not a sample (docs/audit-sampling.md). Since 1.8.6 the
                    # distro's default sampler keeps 5 traces a second and drops the rest of a
                    # burst; ratio 1.0 keeps every span, whatever the sender's trace flags say.
                    sampling_ratio=1.0,
                    # A record is exported even when its span is not (when OTEL_TRACES_SAMPLER
                    # overrides the ratio). False is today's default; Microsoft documents it as
                    # on wherever sampling is, so it is pinned rather than inherited.
                    enable_trace_based_sampling_for_logs=False,
                    **options,
                )
                _warn_unless_every_span_is_kept()
                # The audit records are INFO: a root logger at its default (WARNING) drops them.
                bridge_logger = logging.getLogger("bridge")
                if bridge_logger.level == logging.NOTSET:
                    bridge_logger.setLevel(logging.INFO)
                _configured.append(connection_string)
        self._tracer = trace.get_tracer("bridge")

    def start(
        self, name: str, parent: TraceContext | None, attributes: Mapping[str, str]
    ) -> OpenSpan:
        from opentelemetry import context, trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        parent_context = context.Context()
        if parent is not None:
            remote = SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(int(parent.flags, 16)),
            )
            parent_context = trace.set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(
            f"bridge {name}",
            context=parent_context,
            kind=SpanKind.CONSUMER,
            attributes={f"bridge.{key}": value for key, value in attributes.items() if value},
        )
        token = context.attach(trace.set_span_in_context(span))
        own = span.get_span_context()
        ids = TraceContext(f"{own.trace_id:032x}", f"{own.span_id:016x}", f"{own.trace_flags:02x}")
        return _OtelSpan(ids, span, token)


def _warn_unless_every_span_is_kept() -> None:
    """Say so, where the records go, when the process's tracer provider is not the one asked for:
    OTEL_TRACES_SAMPLER, which the distro reads after its arguments, or an earlier configuration
    (the Functions worker's own, with PYTHON_ENABLE_OPENTELEMETRY) decides which spans are kept.
    The records are exported regardless."""
    from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler
    from opentelemetry import trace

    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    wanted = ApplicationInsightsSampler(1.0).get_description()
    if sampler is None or sampler.get_description() != wanted:
        described = sampler.get_description() if sampler is not None else "none"
        logging.getLogger(__name__).warning(
            "spans of the audit trail are sampled by %s, not %s: OTEL_TRACES_SAMPLER or an "
            "earlier OpenTelemetry configuration decides; every audit record is still exported",
            described,
            wanted,
        )


def flush() -> None:
    """Export what is buffered now (before a process exits; the SDK also does it at exit)."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush()
