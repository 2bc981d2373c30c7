"""Builds the bridge's object graph from settings, once per process.

Nothing here runs at import: `runtime()` builds on first use and caches, so `import function_app`
stays light (azure.ai.ml is imported by the Azure ML adapter only when it first creates a job).
Tests call `build(settings)` with their own settings.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential

from bridge.audit import Audit, JsonFormatter, LocalSpans, Spans
from bridge.effect_once import hold_for, lease_for
from bridge.errors import ConfigurationError
from bridge.events import workspace_resource_id
from bridge.policy import Policy
from bridge.service import Bridge
from bridge.settings import ENTRA, Settings
from bridge.signing import Keyring, RotatingKeyring
from bridge.webhook import Gate

if TYPE_CHECKING:
    from bridge.adapters.airflow import AirflowRest
    from bridge.adapters.azureml import AzureMLJobs
    from bridge.adapters.keyvault import KeyVaultSigningKey

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build(settings: Settings) -> Bridge:
    settings.require()
    from bridge.ledger.table import TableLedger

    credential = credential_for(settings)
    if settings.ledger_connection_string:
        ledger = TableLedger.from_connection_string(
            settings.ledger_connection_string, settings.ledger_table
        )
    else:
        assert settings.ledger_endpoint  # settings.require() said one of the two is set
        ledger = TableLedger.from_endpoint(
            settings.ledger_endpoint, settings.ledger_table, credential
        )
    azureml = azureml_jobs(settings, credential)
    store = signing_key_store(settings, credential)
    return Bridge(
        ledger=ledger,
        audit=Audit(spans=spans_for(settings, credential), keep=ledger.add_trail),
        jobs=azureml,
        lifecycle=azureml,
        workspace_id=workspace_resource_id(
            settings.azureml_subscription_id,
            settings.azureml_resource_group,
            settings.azureml_workspace,
        ),
        airflow=airflow_for(settings),
        policy=Policy.from_json(settings.policy_json),
        keys=(
            Keyring(settings.signing_key, settings.signing_key_previous)
            if store is None
            else RotatingKeyring(store.keyring)
        ),
        signing_key=store,
        workspace=settings.azureml_workspace,
        reconcile_after=settings.reconcile_after_seconds,
        blocked_give_up=settings.blocked_give_up_seconds,
        lease_seconds=lease_for(
            settings.function_timeout_seconds, settings.airflow_timeout_seconds
        ),
        ambiguity_hold=hold_for(settings.airflow_timeout_seconds),
    )


def airflow_for(settings: Settings, *, timeout: float | None = None) -> AirflowRest:
    """The Airflow adapter these settings name: the bridge's user, its static API token, or its
    managed identity's Entra ID token."""
    from bridge.adapters.airflow import AirflowRest, EntraAccess

    entra = None
    if settings.airflow_auth == ENTRA:
        assert settings.airflow_audience  # settings.require() said so
        entra = EntraAccess(
            airflow_credential(settings),
            settings.airflow_audience,
            settings.managed_identity_client_id,
        )
    return AirflowRest(
        settings.airflow_url,
        settings.airflow_username,
        settings.airflow_password,
        token=settings.airflow_token,
        entra=entra,
        timeout=settings.airflow_timeout_seconds if timeout is None else timeout,
    )


def airflow_credential(settings: Settings) -> TokenCredential:
    """The managed identity itself, for Airflow's app registration: App Service's identity
    endpoint in Azure (and the local stack's, `bridge.local.identity`, which sets the same
    variables). Never a developer's sign-in: the app role is assigned to this identity alone."""
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)


def signing_key_store(
    settings: Settings, credential: TokenCredential | None = None
) -> KeyVaultSigningKey | None:
    """The signing key's secret in Key Vault, when the settings name a vault (else the keys are
    the two settings, rotated by hand)."""
    if not settings.key_vault_url:
        return None
    from bridge.adapters.keyvault import KeyVaultSigningKey

    return KeyVaultSigningKey(
        settings.key_vault_url,
        settings.signing_key_secret,
        credential or credential_for(settings),
        identity=identity_of(settings),
        ca_file=settings.key_vault_ca_file,
    )


def azureml_jobs(settings: Settings, credential: TokenCredential | None = None) -> AzureMLJobs:
    """The Azure ML adapter these settings name (the CLI and the local demo use it too)."""
    from bridge.adapters.azureml import AzureMLJobs

    return AzureMLJobs(
        subscription_id=settings.azureml_subscription_id,
        resource_group=settings.azureml_resource_group,
        workspace=settings.azureml_workspace,
        credential=credential or credential_for(settings),
        endpoint=settings.azureml_endpoint,
        ca_file=settings.azureml_ca_file,
        identity=identity_of(settings),
    )


@functools.cache
def runtime() -> Bridge:
    """The process's bridge, built from the environment on first use."""
    # The worker logs at INFO and the host forwards it ("Function": "Information"): the Azure
    # SDKs would add a line per HTTP request and response, and per token. Their warnings show.
    for sdk in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
        logging.getLogger(sdk).setLevel(logging.WARNING)
    return build(Settings.from_env(os.environ))


def json_logs(logger: logging.Logger, level: int = logging.INFO) -> None:
    """Send this logger's records to stderr as JSON lines (`bridge.audit.JsonFormatter`): how
    `bridge serve` and the dev host log. In Azure, Application Insights receives them."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


def spans_for(settings: Settings, credential: TokenCredential) -> Spans:
    """OpenTelemetry to Application Insights when the deployment has it; else the log alone."""
    if not settings.applicationinsights_connection_string:
        return LocalSpans()
    from bridge.adapters.telemetry import AzureMonitorSpans

    # The ingestion endpoint takes Entra ID tokens only when the connection's authentication
    # string says so (Bicep: APPLICATIONINSIGHTS_AUTHENTICATION_STRING); locally it takes none.
    return AzureMonitorSpans(
        settings.applicationinsights_connection_string,
        credential if settings.applicationinsights_entra_auth else None,
    )


def gate_for(settings: Settings) -> Gate | None:
    """The webhook's Entra ID check when the settings ask for it (secure webhook delivery)."""
    if not (settings.webhook_audience and settings.webhook_issuer):
        return None
    from bridge.adapters.entra import ENTRA_JWKS_URL, EntraBearer

    return EntraBearer(
        settings.webhook_audience,
        settings.webhook_issuer,
        settings.webhook_jwks_url or ENTRA_JWKS_URL,
    )


@functools.cache
def webhook_gate() -> Gate | None:
    """The process's webhook gate, from the environment (its key cache lives as long)."""
    return gate_for(Settings.from_env(os.environ))


def identity_of(settings: Settings) -> str:
    """The identity the audit trail names for Azure calls (the one `credential_for` picks): a
    client id, never a secret."""
    if emulated(settings):
        return "local emulator token"
    if settings.managed_identity_client_id:
        return f"managed identity {settings.managed_identity_client_id}"
    return "default credential"


CredentialSource = Callable[[Settings], "TokenCredential | None"]
# Where a credential comes from besides the platform's identity: the local stack registers one for
# its Azure ML emulator on loopback (`bridge.local.credential`), so production wiring imports
# nothing of the local stack, and the deployed package leaves it out (.funcignore).
_CREDENTIAL_SOURCES: list[CredentialSource] = []


def credential_source(source: CredentialSource) -> CredentialSource:
    """Register a source asked first, in order, by `credential_for` (None: not mine)."""
    _CREDENTIAL_SOURCES.append(source)
    return source


def credential_for(settings: Settings) -> TokenCredential:
    """The managed identity in Azure; what a registered source gives for settings it owns."""
    for source in _CREDENTIAL_SOURCES:
        found = source(settings)
        if found is not None:
            return found
    if emulated(settings):
        raise ConfigurationError(
            "BRIDGE_AZUREML_ENDPOINT is an emulator on loopback, and no local credential is "
            "registered for it: the local stack (bridge.local) provides one"
        )
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


def emulated(settings: Settings) -> bool:
    """Whether Azure ML is the local emulator on loopback (which takes the local token)."""
    endpoint = settings.azureml_endpoint
    return bool(endpoint) and urlparse(endpoint).hostname in _LOOPBACK
