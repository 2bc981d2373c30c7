"""The Function App's `health`: settings first, then whether its identity can get each token it
needs and whether Airflow accepts its user. Each problem is named; no value, token or password is
ever shown, so the answer may be public (the route is anonymous)."""

from __future__ import annotations

from collections.abc import Mapping

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from bridge.errors import BridgeError, ConfigurationError, first_line
from bridge.policy import Policy
from bridge.provider.senders import SERVICE_BUS_SCOPE
from bridge.settings import SERVICEBUS_CONNECTION, Settings

AZUREML_SCOPE = "https://management.azure.com/.default"
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
