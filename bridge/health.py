"""The Function App's `health`: settings first, then whether its identity can get each token it
needs and whether Airflow accepts its user. Each problem is named; no value, token or password is
ever shown, so the answer may be public (the route is anonymous).

`credentials` tells each credential's freshness, never its value: how Airflow is signed in to and
when that token expires, when each token the identity got for Azure expires, and the signing key's
id, age and expiry."""

from __future__ import annotations

import re
import time
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
from bridge.signing import key_id

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
    freshness: dict[str, Any] | None = None,
) -> list[str]:
    """What stops the bridge from working now, each named; empty when it can work. With
    `freshness`, each credential's expiry is recorded in it as it is checked."""
    found = settings.problems()
    try:
        Policy.from_json(settings.policy_json)
    except ConfigurationError as exc:
        found.append(str(exc))
    if found:
        return found  # the live checks below would only repeat these
    from bridge.composition import credential_for

    credential = credential or credential_for(settings)
    tokens: dict[str, Any] = {}
    for service, scope in scopes(settings, env or {}).items():
        try:
            tokens[service] = {"expires_in_seconds": _left(credential.get_token(scope).expires_on)}
        except ClientAuthenticationError as exc:
            tokens[service] = {"expires_in_seconds": None}
            found.append(
                f"the identity can get no token for {service} ({scope}): {first_line(exc)}"
            )
    airflow: dict[str, Any] = {}
    found += _airflow(settings, airflow)
    signing: dict[str, Any] = {}
    found += _signing_key(settings, credential, signing)
    if freshness is not None:
        freshness |= {"airflow": airflow, "identity": tokens, "signing_key": signing}
    return found


def _left(expires_on: float | None) -> int | None:
    return None if expires_on is None else round(expires_on - time.time())


def scopes(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The token scopes this deployment needs: Tables unless the ledger is reached by connection
    string (locally), Service Bus where the queue trigger is bound to a namespace (in Azure)."""
    needed = {"Azure ML": AZUREML_SCOPE}
    if not settings.ledger_connection_string:
        needed["Table Storage"] = TABLES_SCOPE
    if env.get(f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace"):
        needed["Service Bus"] = SERVICE_BUS_SCOPE
    return needed


def _airflow(settings: Settings, freshness: dict[str, Any]) -> list[str]:
    """Whether Airflow's API answers the bridge's identity: a token issued to the configured user
    (or the static token taken, or the managed identity's Entra ID token), then one authorized
    read. `freshness` gets how it signs in and when that token expires."""
    from bridge.composition import airflow_for

    rest = airflow_for(settings, timeout=5)
    try:
        rest.check()
    except BridgeError as exc:
        return [str(exc)]
    finally:
        freshness |= {"auth": rest.session.auth,
                      "token_expires_in_seconds": _left(rest.session.expires_at)}  # fmt: skip
    return []


def _signing_key(
    settings: Settings, credential: TokenCredential, freshness: dict[str, Any]
) -> list[str]:
    """Where the signing key comes from, its id, age and expiry: the current version in Key Vault
    (read with the identity), or the setting's key (its id only: settings have no dates)."""
    from bridge.composition import signing_key_store

    store = signing_key_store(settings, credential)
    if store is None:
        freshness |= {"source": "settings", "kid": key_id(settings.signing_key)}
        return []
    freshness["source"] = "key vault"
    try:
        freshness |= store.freshness()
    except BridgeError as exc:
        return [f"signing key: {exc}"]
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
    credentials: dict[str, Any] = {}
    found = problems(settings, env, freshness=credentials)
    if found:
        return 503, {"status": "misconfigured", "problems": found, "credentials": credentials}
    body: dict[str, Any] = {"status": "ok", "problems": [], "credentials": credentials}
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
