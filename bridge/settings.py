"""Typed settings, read once from the environment (app settings in Azure, exported vars locally).

`SETTINGS` is the one list of every variable the Function App side reads; the infrastructure test
checks that Bicep sets exactly these. Values are never logged or reported, only names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from bridge.errors import ConfigurationError
from bridge.ncrontab import Schedule
from bridge.signing import KEY_VAULT_REFERENCE

# Read by function_app.py's decorators (the Functions host resolves them), not by Settings.
SUBMISSION_QUEUE = "BRIDGE_SUBMISSION_QUEUE"
SERVICEBUS_CONNECTION = "BRIDGE_SERVICEBUS"  # prefix: BRIDGE_SERVICEBUS__fullyQualifiedNamespace
# Read by the timer trigger's decorator too; the dev host reads it to fire the same sweep.
RECONCILE_SCHEDULE = "BRIDGE_RECONCILE_SCHEDULE"

AZUREML_SUBSCRIPTION_ID = "BRIDGE_AZUREML_SUBSCRIPTION_ID"
AZUREML_RESOURCE_GROUP = "BRIDGE_AZUREML_RESOURCE_GROUP"
AZUREML_WORKSPACE = "BRIDGE_AZUREML_WORKSPACE"
AZUREML_ENDPOINT = "BRIDGE_AZUREML_ENDPOINT"
AZUREML_CA_FILE = "BRIDGE_AZUREML_CA_FILE"  # local only: the emulator's certificate authority
LEDGER_ENDPOINT = "BRIDGE_LEDGER_ENDPOINT"
LEDGER_CONNECTION_STRING = "BRIDGE_LEDGER_CONNECTION_STRING"
LEDGER_TABLE = "BRIDGE_LEDGER_TABLE"
AIRFLOW_URL = "BRIDGE_AIRFLOW_URL"
AIRFLOW_USERNAME = "BRIDGE_AIRFLOW_USERNAME"
AIRFLOW_PASSWORD = "BRIDGE_AIRFLOW_PASSWORD"  # pragma: allowlist secret (a setting's name)
# Instead of a user and password: an Airflow API token, used as it is (a Key Vault reference).
AIRFLOW_TOKEN = "BRIDGE_AIRFLOW_TOKEN"  # pragma: allowlist secret (a setting's name)
# "entra": the bridge sends its managed identity's Entra ID token to Airflow, for the app
# registration AIRFLOW_AUDIENCE names; no user, password or token (docs/airflow-identity.md).
AIRFLOW_AUTH = "BRIDGE_AIRFLOW_AUTH"
AIRFLOW_AUDIENCE = "BRIDGE_AIRFLOW_AUDIENCE"
ENTRA = "entra"
SIGNING_KEY = "BRIDGE_SIGNING_KEY"
# Instead of the two key settings: the key's secret in Key Vault, read with the identity and
# rotated by the bridge on Key Vault's SecretNearExpiry event (docs/security.md).
KEY_VAULT_URL = "BRIDGE_KEY_VAULT_URL"
SIGNING_KEY_SECRET = "BRIDGE_SIGNING_KEY_SECRET"  # pragma: allowlist secret (a name)
KEY_VAULT_CA_FILE = "BRIDGE_KEY_VAULT_CA_FILE"  # local only: the Key Vault emulator's authority
DEFAULT_SIGNING_KEY_SECRET = "signing-key"  # pragma: allowlist secret (a name)
# The key before the last rotation: tags it signed still verify (docs/security.md, rotation).
SIGNING_KEY_PREVIOUS = "BRIDGE_SIGNING_KEY_PREVIOUS"
POLICY = "BRIDGE_POLICY"
RECONCILE_AFTER_SECONDS = "BRIDGE_RECONCILE_AFTER_SECONDS"
# How long work blocked on an operator's fix is retried before it fails (docs/reliability.md).
BLOCKED_GIVE_UP_SECONDS = "BRIDGE_BLOCKED_GIVE_UP_SECONDS"
# Finished jobs older than this are removed from the ledger by the daily `retain` timer.
LEDGER_RETENTION_DAYS = "BRIDGE_LEDGER_RETENTION_DAYS"
# How long the bridge waits for one Airflow request (the effect claim's lease derives from it).
AIRFLOW_TIMEOUT_SECONDS = "BRIDGE_AIRFLOW_TIMEOUT_SECONDS"
# The host's own override of host.json's functionTimeout: the host and the bridge read the same
# value (Bicep sets it to host.json's; a test keeps them equal), and the lease derives from it.
FUNCTION_TIMEOUT = "AzureFunctionsJobHost__functionTimeout"
# Event Grid's secure webhook delivery (optional): the Entra ID token every delivery must carry.
WEBHOOK_AUDIENCE = "BRIDGE_WEBHOOK_AUDIENCE"  # the Entra app's id or application id URI
WEBHOOK_ISSUER = "BRIDGE_WEBHOOK_ISSUER"  # https://sts.windows.net/<tenant>/ (v1 tokens)
WEBHOOK_JWKS_URL = "BRIDGE_WEBHOOK_JWKS_URL"  # default: Entra's published keys
# Application Insights, as Azure names these settings (Bicep sets both on the Function App).
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
MANAGED_IDENTITY_CLIENT_ID = "AZURE_CLIENT_ID"

# Every setting the Function App's code reads, with whether Azure must set it.
SETTINGS: Mapping[str, bool] = {
    SUBMISSION_QUEUE: True,
    f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace": True,
    f"{SERVICEBUS_CONNECTION}__credential": True,
    f"{SERVICEBUS_CONNECTION}__clientId": True,
    AZUREML_SUBSCRIPTION_ID: True,
    AZUREML_RESOURCE_GROUP: True,
    AZUREML_WORKSPACE: True,
    AZUREML_ENDPOINT: False,
    AZUREML_CA_FILE: False,
    LEDGER_ENDPOINT: True,
    LEDGER_CONNECTION_STRING: False,
    LEDGER_TABLE: True,
    AIRFLOW_URL: True,
    AIRFLOW_USERNAME: True,
    AIRFLOW_PASSWORD: True,
    SIGNING_KEY: False,  # or the secret in Key Vault (KEY_VAULT_URL)
    SIGNING_KEY_PREVIOUS: False,
    KEY_VAULT_URL: False,
    SIGNING_KEY_SECRET: False,  # default: signing-key
    KEY_VAULT_CA_FILE: False,
    POLICY: False,
    MANAGED_IDENTITY_CLIENT_ID: True,
    RECONCILE_SCHEDULE: True,
    RECONCILE_AFTER_SECONDS: True,
    BLOCKED_GIVE_UP_SECONDS: False,  # default: 24 h, Event Grid's own retry window
    AIRFLOW_TIMEOUT_SECONDS: False,  # default: 10 s
    LEDGER_RETENTION_DAYS: False,  # default: 90 (bridge/retention.py says why)
    FUNCTION_TIMEOUT: True,
    AIRFLOW_TOKEN: False,  # instead of the user and password (docs/airflow-identity.md)
    AIRFLOW_AUTH: False,  # "entra": the identity's token instead of any of the three
    AIRFLOW_AUDIENCE: False,
    WEBHOOK_AUDIENCE: False,
    WEBHOOK_ISSUER: False,
    WEBHOOK_JWKS_URL: False,
    # Read by the host and by the bridge (its audit trail's OpenTelemetry export).
    APPLICATIONINSIGHTS_CONNECTION_STRING: True,
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: True,
}
DEFAULT_RECONCILE_SCHEDULE = "0 */5 * * * *"  # every 5 minutes
DEFAULT_RECONCILE_AFTER_SECONDS = 600.0
DEFAULT_BLOCKED_GIVE_UP_SECONDS = 24 * 3600.0
DEFAULT_AIRFLOW_TIMEOUT_SECONDS = 10.0
DEFAULT_LEDGER_RETENTION_DAYS = 90.0
DEFAULT_FUNCTION_TIMEOUT = "00:05:00"  # host.json's functionTimeout

_SECRET_SETTINGS = (AIRFLOW_PASSWORD, SIGNING_KEY, LEDGER_CONNECTION_STRING)


@dataclass(frozen=True)
class Settings:
    azureml_subscription_id: str = ""
    azureml_resource_group: str = ""
    azureml_workspace: str = ""
    azureml_endpoint: str | None = None
    azureml_ca_file: str | None = None
    ledger_endpoint: str | None = None
    ledger_connection_string: str | None = field(default=None, repr=False)
    ledger_table: str = "bridgeledger"
    airflow_url: str = ""
    airflow_username: str = ""
    airflow_password: str = field(default="", repr=False)
    airflow_token: str | None = field(default=None, repr=False)
    airflow_auth: str = ""  # "" (the user and password, or the static token) or "entra"
    airflow_audience: str | None = None
    signing_key: str = field(default="", repr=False)
    signing_key_previous: str | None = field(default=None, repr=False)
    key_vault_url: str | None = None
    signing_key_secret: str = DEFAULT_SIGNING_KEY_SECRET
    key_vault_ca_file: str | None = None
    policy_json: str | None = None
    managed_identity_client_id: str | None = None
    reconcile_schedule: str = DEFAULT_RECONCILE_SCHEDULE
    reconcile_after_seconds: float = DEFAULT_RECONCILE_AFTER_SECONDS
    blocked_give_up_seconds: float = DEFAULT_BLOCKED_GIVE_UP_SECONDS
    airflow_timeout_seconds: float = DEFAULT_AIRFLOW_TIMEOUT_SECONDS
    ledger_retention_days: float = DEFAULT_LEDGER_RETENTION_DAYS
    function_timeout: str = DEFAULT_FUNCTION_TIMEOUT
    applicationinsights_connection_string: str | None = field(default=None, repr=False)
    applicationinsights_entra_auth: bool = False
    webhook_audience: str | None = None
    webhook_issuer: str | None = None
    webhook_jwks_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str:
            return env.get(name, "").strip()

        return cls(
            azureml_subscription_id=get(AZUREML_SUBSCRIPTION_ID),
            azureml_resource_group=get(AZUREML_RESOURCE_GROUP),
            azureml_workspace=get(AZUREML_WORKSPACE),
            azureml_endpoint=get(AZUREML_ENDPOINT) or None,
            azureml_ca_file=get(AZUREML_CA_FILE) or None,
            ledger_endpoint=get(LEDGER_ENDPOINT) or None,
            ledger_connection_string=get(LEDGER_CONNECTION_STRING) or None,
            ledger_table=get(LEDGER_TABLE) or "bridgeledger",
            airflow_url=get(AIRFLOW_URL).rstrip("/"),
            airflow_username=get(AIRFLOW_USERNAME),
            airflow_password=get(AIRFLOW_PASSWORD),
            airflow_token=get(AIRFLOW_TOKEN) or None,
            airflow_auth=get(AIRFLOW_AUTH).lower(),
            airflow_audience=get(AIRFLOW_AUDIENCE) or None,
            signing_key=get(SIGNING_KEY),
            signing_key_previous=get(SIGNING_KEY_PREVIOUS) or None,
            key_vault_url=get(KEY_VAULT_URL) or None,
            signing_key_secret=get(SIGNING_KEY_SECRET) or DEFAULT_SIGNING_KEY_SECRET,
            key_vault_ca_file=get(KEY_VAULT_CA_FILE) or None,
            policy_json=get(POLICY) or None,
            managed_identity_client_id=get(MANAGED_IDENTITY_CLIENT_ID) or None,
            reconcile_schedule=get(RECONCILE_SCHEDULE) or DEFAULT_RECONCILE_SCHEDULE,
            reconcile_after_seconds=_seconds(get(RECONCILE_AFTER_SECONDS)),
            blocked_give_up_seconds=_seconds(
                get(BLOCKED_GIVE_UP_SECONDS), DEFAULT_BLOCKED_GIVE_UP_SECONDS
            ),
            airflow_timeout_seconds=_seconds(
                get(AIRFLOW_TIMEOUT_SECONDS), DEFAULT_AIRFLOW_TIMEOUT_SECONDS
            ),
            function_timeout=get(FUNCTION_TIMEOUT) or DEFAULT_FUNCTION_TIMEOUT,
            ledger_retention_days=_seconds(
                get(LEDGER_RETENTION_DAYS), DEFAULT_LEDGER_RETENTION_DAYS
            ),
            applicationinsights_connection_string=get(APPLICATIONINSIGHTS_CONNECTION_STRING)
            or None,
            applicationinsights_entra_auth="Authorization=AAD"
            in get(APPLICATIONINSIGHTS_AUTHENTICATION_STRING),
            webhook_audience=get(WEBHOOK_AUDIENCE) or None,
            webhook_issuer=get(WEBHOOK_ISSUER) or None,
            webhook_jwks_url=get(WEBHOOK_JWKS_URL) or None,
        )

    def environment(self) -> dict[str, str]:
        """These settings as the environment variables `from_env` reads (unset ones left out)."""
        values = {
            AZUREML_SUBSCRIPTION_ID: self.azureml_subscription_id,
            AZUREML_RESOURCE_GROUP: self.azureml_resource_group,
            AZUREML_WORKSPACE: self.azureml_workspace,
            AZUREML_ENDPOINT: self.azureml_endpoint,
            AZUREML_CA_FILE: self.azureml_ca_file,
            LEDGER_ENDPOINT: self.ledger_endpoint,
            LEDGER_CONNECTION_STRING: self.ledger_connection_string,
            LEDGER_TABLE: self.ledger_table,
            AIRFLOW_URL: self.airflow_url,
            AIRFLOW_USERNAME: self.airflow_username,
            AIRFLOW_PASSWORD: self.airflow_password,
            AIRFLOW_TOKEN: self.airflow_token,
            AIRFLOW_AUTH: self.airflow_auth,
            AIRFLOW_AUDIENCE: self.airflow_audience,
            SIGNING_KEY: self.signing_key,
            SIGNING_KEY_PREVIOUS: self.signing_key_previous,
            KEY_VAULT_URL: self.key_vault_url,
            SIGNING_KEY_SECRET: (
                self.signing_key_secret
                if self.signing_key_secret != DEFAULT_SIGNING_KEY_SECRET
                else None
            ),
            KEY_VAULT_CA_FILE: self.key_vault_ca_file,
            POLICY: self.policy_json,
            MANAGED_IDENTITY_CLIENT_ID: self.managed_identity_client_id,
            RECONCILE_SCHEDULE: self.reconcile_schedule,
            RECONCILE_AFTER_SECONDS: repr(self.reconcile_after_seconds),
            BLOCKED_GIVE_UP_SECONDS: repr(self.blocked_give_up_seconds),
            AIRFLOW_TIMEOUT_SECONDS: repr(self.airflow_timeout_seconds),
            FUNCTION_TIMEOUT: self.function_timeout,
            LEDGER_RETENTION_DAYS: repr(self.ledger_retention_days),
            APPLICATIONINSIGHTS_CONNECTION_STRING: self.applicationinsights_connection_string,
            APPLICATIONINSIGHTS_AUTHENTICATION_STRING: (
                "Authorization=AAD" if self.applicationinsights_entra_auth else None
            ),
            WEBHOOK_AUDIENCE: self.webhook_audience,
            WEBHOOK_ISSUER: self.webhook_issuer,
            WEBHOOK_JWKS_URL: self.webhook_jwks_url,
        }
        return {name: value for name, value in values.items() if value}

    def problems(self) -> list[str]:
        """Configuration problems, each naming the setting and never showing a value."""
        found = []
        required = {
            AZUREML_SUBSCRIPTION_ID: self.azureml_subscription_id,
            AZUREML_RESOURCE_GROUP: self.azureml_resource_group,
            AZUREML_WORKSPACE: self.azureml_workspace,
            AIRFLOW_URL: self.airflow_url,
        }
        if not self.key_vault_url:  # the key in Key Vault replaces the two key settings
            required |= {SIGNING_KEY: self.signing_key}
        if self.airflow_auth == ENTRA:
            required |= {AIRFLOW_AUDIENCE: self.airflow_audience or ""}
        elif not self.airflow_token:  # a static API token replaces the user and password
            required |= {AIRFLOW_USERNAME: self.airflow_username,
                         AIRFLOW_PASSWORD: self.airflow_password}  # fmt: skip
        found += [f"{name} is not set" for name, value in required.items() if not value]
        found += self._airflow_auth_problems()
        if self.key_vault_url:
            # Rotated in Key Vault, the key must not also sit in settings that never rotate.
            found += [f"{name} is set, and {KEY_VAULT_URL} replaces it: remove it"
                      for name, value in ((SIGNING_KEY, self.signing_key),
                                          (SIGNING_KEY_PREVIOUS, self.signing_key_previous))
                      if value]  # fmt: skip
        if not (self.ledger_endpoint or self.ledger_connection_string):
            found.append(f"neither {LEDGER_ENDPOINT} nor {LEDGER_CONNECTION_STRING} is set")
        for name, url in (
            (AIRFLOW_URL, self.airflow_url),
            (AZUREML_ENDPOINT, self.azureml_endpoint),
            (LEDGER_ENDPOINT, self.ledger_endpoint),
            (WEBHOOK_JWKS_URL, self.webhook_jwks_url),
            (WEBHOOK_ISSUER, self.webhook_issuer),
            (KEY_VAULT_URL, self.key_vault_url),
        ):
            if url and urlparse(url).scheme not in ("http", "https"):
                found.append(f"{name} is not an http(s) URL")
        found += self.unresolved()
        found += [f"{name} is shorter than 32 characters"
                  for name, key in ((SIGNING_KEY, self.signing_key),
                                    (SIGNING_KEY_PREVIOUS, self.signing_key_previous))
                  if key and len(key) < 32]  # fmt: skip
        if bool(self.webhook_audience) != bool(self.webhook_issuer):
            found.append(f"{WEBHOOK_AUDIENCE} and {WEBHOOK_ISSUER} are set together or not at all")
        if self.policy_json:
            try:
                json.loads(self.policy_json)
            except json.JSONDecodeError as exc:
                found.append(f"{POLICY} is not valid JSON ({exc.msg} at {exc.pos})")
        try:
            Schedule.parse(self.reconcile_schedule)
        except ConfigurationError as exc:
            found.append(f"{RECONCILE_SCHEDULE}: {exc}")
        found += self._number_problems()
        return found

    def _airflow_auth_problems(self) -> list[str]:
        if self.airflow_auth not in ("", ENTRA):
            return [f"{AIRFLOW_AUTH} is {self.airflow_auth!r}: leave it unset, or set {ENTRA!r}"]
        if self.airflow_auth != ENTRA:
            return []
        # The point of the mode is that no Airflow secret exists: one left behind still works for
        # whoever reads it, so it is named, to be removed (from Key Vault too).
        return [f"{name} is set, and {AIRFLOW_AUTH}={ENTRA} never uses it: remove it"
                for name, value in ((AIRFLOW_PASSWORD, self.airflow_password),
                                    (AIRFLOW_TOKEN, self.airflow_token))
                if value]  # fmt: skip

    def _number_problems(self) -> list[str]:
        found = []
        if not (math.isfinite(self.reconcile_after_seconds) and self.reconcile_after_seconds > 0):
            found.append(f"{RECONCILE_AFTER_SECONDS} is not a positive number of seconds")
        if not (math.isfinite(self.blocked_give_up_seconds) and self.blocked_give_up_seconds >= 0):
            found.append(f"{BLOCKED_GIVE_UP_SECONDS} is not a number of seconds (0 or more)")
        if not (math.isfinite(self.airflow_timeout_seconds) and self.airflow_timeout_seconds > 0):
            found.append(f"{AIRFLOW_TIMEOUT_SECONDS} is not a positive number of seconds")
        if not (math.isfinite(self.ledger_retention_days) and self.ledger_retention_days >= 1):
            found.append(f"{LEDGER_RETENTION_DAYS} is not a number of days (1 or more)")
        if not math.isfinite(self.function_timeout_seconds):
            found.append(f"{FUNCTION_TIMEOUT} is not a time span (hh:mm:ss) of at most a day")
        return found

    @property
    def function_timeout_seconds(self) -> float:
        """The host's functionTimeout (hh:mm:ss, or -1 for none: then a day); NaN if unreadable."""
        text = self.function_timeout.strip()
        return 24 * 3600.0 if text == "-1" else timespan_seconds(text)

    def unresolved(self) -> list[str]:
        """Settings App Service passed through as Key Vault references it could not resolve.
        They block the work that needs them (`BlockedError`) and heal once the platform resolves
        them; they do not stop the bridge from starting."""
        return [f"{name} is an unresolved Key Vault reference (check the identity's access)"
                for name, value in ((AIRFLOW_PASSWORD, self.airflow_password),
                                    (SIGNING_KEY, self.signing_key),
                                    (SIGNING_KEY_PREVIOUS, self.signing_key_previous or ""),
                                    (AIRFLOW_USERNAME, self.airflow_username),
                                    (AIRFLOW_TOKEN, self.airflow_token or ""))
                if value.startswith(KEY_VAULT_REFERENCE)]  # fmt: skip

    def require(self) -> None:
        unresolved = set(self.unresolved())
        problems = [problem for problem in self.problems() if problem not in unresolved]
        if problems:
            raise ConfigurationError("; ".join(problems))


def timespan_seconds(text: str) -> float:
    """A .NET time span as host.json writes one (`hh:mm:ss`, fractions allowed) in seconds; NaN
    if it is not one."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", text.strip())
    if match is None:
        return math.nan
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _seconds(text: str, default: float = DEFAULT_RECONCILE_AFTER_SECONDS) -> float:
    """A number of seconds; NaN (reported by `problems`) when the text is not a number."""
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        return math.nan
