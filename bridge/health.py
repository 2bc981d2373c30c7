"""The Function App's `health`: settings first, then whether its identity can get each token it
needs and whether Airflow accepts its user. Each problem is named; no value, token or password is
ever shown, so the answer may be public (the route is anonymous)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from bridge.errors import BridgeError, ConfigurationError, first_line
from bridge.ledger import Ledger
from bridge.policy import Policy
from bridge.provider.senders import SERVICE_BUS_SCOPE
from bridge.settings import SERVICEBUS_CONNECTION, Settings

AZUREML_SCOPE = "https://management.azure.com/.default"
# How many blocked jobs one health answer counts at most: one read of the attention index, paged
# no further (the route is anonymous: no caller may make it read the whole ledger).
BLOCKED_READ_LIMIT = 1000
_CAUSE = re.compile(r"^\[([a-z-]+)\] ")
TABLES_SCOPE = "https://storage.azure.com/.default"


def problems(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    credential: TokenCredential | None = None,
) -> list[str]:
    """What stops the bridge from working now, each named; empty when it can work."""
    found = settings.problems()
    try:
        Policy.from_json(settings.policy_json)
    except ConfigurationError as exc:
        found.append(str(exc))
    if found:
        return found  # the live checks below would only repeat these
    from bridge.composition import credential_for

    credential = credential or credential_for(settings)
    for service, scope in scopes(settings, env or {}).items():
        try:
            credential.get_token(scope)
        except ClientAuthenticationError as exc:
            found.append(
                f"the identity can get no token for {service} ({scope}): {first_line(exc)}"
            )
    found += _airflow(settings)
    return found


def scopes(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The token scopes this deployment needs: Tables unless the ledger is reached by connection
    string (locally), Service Bus where the queue trigger is bound to a namespace (in Azure)."""
    needed = {"Azure ML": AZUREML_SCOPE}
    if not settings.ledger_connection_string:
        needed["Table Storage"] = TABLES_SCOPE
    if env.get(f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace"):
        needed["Service Bus"] = SERVICE_BUS_SCOPE
    return needed


def _airflow(settings: Settings) -> list[str]:
    """Whether Airflow's API answers the bridge's identity: a token issued to the configured user
    (or the static token taken), then one authorized read."""
    from bridge.composition import airflow_for

    try:
        airflow_for(settings, timeout=5).check()
    except BridgeError as exc:
        return [str(exc)]
    return []


def report(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    ledger: Callable[[], Ledger] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The health answer: 503 with the problems when the bridge cannot work; else 200, and
    `blocked`: how many jobs wait on an operator's fix, by the class of their reason (never the
    reason itself, which may name a user or an asset: the route is anonymous)."""
    found = problems(settings, env)
    if found:
        return 503, {"status": "misconfigured", "problems": found}
    body: dict[str, Any] = {"status": "ok", "problems": []}
    if ledger is not None:
        try:
            body["blocked"] = blocked(ledger())
        except BridgeError as exc:
            return 503, {"status": "misconfigured", "problems": [f"ledger: {first_line(exc)}"]}
        if body["blocked"]["jobs"]:
            body["status"] = "blocked"
    return 200, body


def blocked(ledger: Ledger) -> dict[str, Any]:
    """`{"jobs": n, "causes": {"credentials": k, ...}}` over the jobs that wait on a fix."""
    reasons = ledger.blocked_reasons(BLOCKED_READ_LIMIT)
    causes = Counter(
        match.group(1) if (match := _CAUSE.match(reason)) else "transient" for reason in reasons
    )
    return {"jobs": len(reasons), "causes": dict(sorted(causes.items()))}
