"""The sender of submissions to the submission queue: Service Bus, in Azure and locally.

Runs inside the Airflow deployment, so it imports only the contract and, lazily, the Service Bus
SDK: a DAG file that imports the operator pays for neither. In Azure the workers sign in with
their identity. Locally the same sender talks to a Service Bus development emulator (the local
stack's, or Microsoft's container): plain TCP to `host:port`, signed with the emulator's
documented placeholder key, so no setting holds a key either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from bridge.contracts import SCHEMA_ID, Submission
from bridge.errors import (
    BlockedError,
    ConfigurationError,
    PermanentError,
    TransientError,
    first_line,
)

if TYPE_CHECKING:
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
    from azure.servicebus import ServiceBusMessage

    Credential = TokenCredential | AzureNamedKeyCredential | AzureSasCredential

SUBMISSION_QUEUE = "BRIDGE_SUBMISSION_QUEUE"
SERVICEBUS_NAMESPACE = "BRIDGE_SERVICEBUS_NAMESPACE"
# "true": the namespace is a Service Bus development emulator at host:port (plain TCP).
SERVICEBUS_EMULATOR = "BRIDGE_SERVICEBUS_EMULATOR"
MANAGED_IDENTITY_CLIENT_ID = "AZURE_CLIENT_ID"
WORKSPACE_ID = "BRIDGE_AZUREML_WORKSPACE_ID"  # the workspace's ARM id: the operator's Studio link
# Workload identity federation (AKS workload identity sets these three; so can any OIDC issuer's
# platform: see docs/workload-identity.md), and where Entra ID is for a cloud of one's own.
FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
TENANT_ID = "AZURE_TENANT_ID"
AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
# Entra ID's hosts in Azure's clouds, which MSAL knows; any other host is checked by MSAL against
# login.microsoftonline.com unless told it is known to its owner.
ENTRA_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
)
DEFAULT_QUEUE = "submissions"
SERVICE_BUS_SCOPE = "https://servicebus.azure.net/.default"
# The key name and placeholder key of Microsoft's Service Bus emulator's documented connection
# string (https://learn.microsoft.com/azure/service-bus-messaging/test-locally-with-service-bus-emulator):
# an emulator accepts any signature, and this is no secret.
EMULATOR_KEY_NAME = "RootManageSharedAccessKey"
EMULATOR_KEY = "SAS_KEY_VALUE"  # pragma: allowlist secret (a documented placeholder)

CONTENT_TYPE = "application/json"
SUBJECT = "bridge.submission"


def emulator_connection_string(address: str) -> str:
    """A Service Bus development emulator's connection string for `host:port`, with the
    documented placeholder key, as Microsoft's emulator documents it."""
    return (
        f"Endpoint=sb://{address};SharedAccessKeyName={EMULATOR_KEY_NAME};"
        f"SharedAccessKey={EMULATOR_KEY};UseDevelopmentEmulator=true"
    )


class SubmissionSender(Protocol):
    """Puts one submission on the queue; a resend of the same id creates no second job."""

    def send(self, submission: Submission) -> None: ...

    def close(self) -> None: ...


def message_properties(submission: Submission) -> dict[str, str]:
    """The application properties of a submission message, for routing and filtering."""
    return {
        "schema": SCHEMA_ID,
        "submission_id": submission.id,
        "dag_id": submission.origin.dag_id,
    }


def service_bus_message(submission: Submission) -> ServiceBusMessage:
    """The Service Bus message for a submission; its id lets duplicate detection drop a resend."""
    from azure.servicebus import ServiceBusMessage

    properties: dict[str | bytes, Any] = dict(message_properties(submission).items())
    return ServiceBusMessage(
        body=submission.to_json(),
        message_id=submission.id,
        content_type=CONTENT_TYPE,
        subject=SUBJECT,
        application_properties=properties,
    )


class ServiceBusSender:
    """Sends to a Service Bus queue with an Entra ID credential (the workers' managed identity).

    `credential` defaults to `DefaultAzureCredential`; `client_options` go to `ServiceBusClient`
    (e.g. `retry_total`). Nothing connects before the first `send`. With `development_emulator`,
    `namespace` is an emulator's `host:port`, reached over plain TCP with its placeholder key.
    """

    def __init__(
        self,
        namespace: str,
        queue_name: str = DEFAULT_QUEUE,
        *,
        credential: Credential | None = None,
        identity: str | None = None,
        managed_identity_client_id: str | None = None,
        development_emulator: bool = False,
        **client_options: Any,
    ) -> None:
        from azure.servicebus import ServiceBusClient

        self.namespace = namespace
        self.queue_name = queue_name
        if development_emulator and credential is None:
            from azure.core.credentials import AzureNamedKeyCredential

            credential = AzureNamedKeyCredential(EMULATOR_KEY_NAME, EMULATOR_KEY)
            identity = f"the Service Bus development emulator at {namespace}"
            client_options["use_tls"] = False  # as its connection string's UseDevelopmentEmulator
        if credential is None:
            env = {MANAGED_IDENTITY_CLIENT_ID: managed_identity_client_id or ""}
            credential, identity = worker_credential(env)
        self._credential = credential
        self._identity = identity or "the credential given"
        self._client = ServiceBusClient(namespace, self._credential, **client_options)
        self._sender = self._client.get_queue_sender(queue_name)

    def send(self, submission: Submission) -> None:
        self._check_token()
        with _service_bus_errors(self.namespace, self.queue_name):
            self._sender.send_messages(service_bus_message(submission))

    def _check_token(self) -> None:
        """Fail at once, naming the identity, the scope and the fix, when no token can be had
        for Service Bus: a retry would only fail the same way, minutes later. The token is cached
        by the credential, so a send after the first costs nothing here."""
        from azure.core.exceptions import ClientAuthenticationError

        get_token = getattr(self._credential, "get_token", None)
        if get_token is None:
            return  # a key or SAS credential: there is no token to ask for
        try:
            get_token(SERVICE_BUS_SCOPE)
        except ClientAuthenticationError as exc:
            raise ConfigurationError(
                f"{self._identity} could not get a token for {SERVICE_BUS_SCOPE} "
                f"({first_line(exc)}). Fix: "
                "give the Airflow workers an identity (managed identity, AKS workload identity or "
                "workload identity federation) with 'Azure Service Bus Data Sender' on queue "
                f"{self.queue_name!r} in {self.namespace}, and set {MANAGED_IDENTITY_CLIENT_ID} "
                "to its client id"
            ) from exc

    def close(self) -> None:
        self._sender.close()
        self._client.close()
        close_credential = getattr(self._credential, "close", None)
        if callable(close_credential):
            close_credential()


def sender_from_env(
    env: Mapping[str, str] = os.environ,
    *,
    queue_name: str | None = None,
    namespace: str | None = None,
) -> SubmissionSender:
    """The sender the configuration asks for; arguments override the environment.

    `BRIDGE_SERVICEBUS_NAMESPACE` names the namespace, reached with the workers' identity; with
    `BRIDGE_SERVICEBUS_EMULATOR=true` it is a development emulator's `host:port` instead.
    """
    queue = queue_name or env.get(SUBMISSION_QUEUE, "").strip() or DEFAULT_QUEUE
    namespace = namespace or env.get(SERVICEBUS_NAMESPACE, "").strip() or None
    if not namespace:
        raise ConfigurationError(
            f"no submission queue configured: set {SERVICEBUS_NAMESPACE} (the Service Bus "
            "namespace, e.g. myns.servicebus.windows.net; or an emulator's host:port with "
            f"{SERVICEBUS_EMULATOR}=true), or the azureml_bridge connection's host"
        )
    emulator = env.get(SERVICEBUS_EMULATOR, "").strip().lower()
    if emulator not in ("", "true", "false"):
        raise ConfigurationError(f"{SERVICEBUS_EMULATOR} must be true or false")
    if emulator == "true":
        return ServiceBusSender(_checked_emulator(namespace), queue, development_emulator=True)
    credential, identity = worker_credential(env)
    return ServiceBusSender(
        _checked_namespace(namespace), queue, credential=credential, identity=identity
    )


def _checked_namespace(namespace: str) -> str:
    if "=" in namespace or ";" in namespace or "/" in namespace:
        raise ConfigurationError(
            f"{SERVICEBUS_NAMESPACE} must be a fully qualified namespace such as "
            "myns.servicebus.windows.net, not a URL or a connection string"
        )
    if ":" in namespace:
        raise ConfigurationError(
            f"{SERVICEBUS_NAMESPACE} (or the azureml_bridge connection's host) has a port: "
            "Azure's namespaces take none; for a development emulator at host:port set "
            f"{SERVICEBUS_EMULATOR}=true (or the connection's use_development_emulator)"
        )
    return namespace


def _checked_emulator(address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address or ";" in address:
        raise ConfigurationError(
            f"{SERVICEBUS_NAMESPACE} (or the azureml_bridge connection's host) must be the "
            f"emulator's host:port, such as 127.0.0.1:5672, when {SERVICEBUS_EMULATOR} (or the "
            "connection's use_development_emulator) is true"
        )
    return address


def worker_credential(env: Mapping[str, str]) -> tuple[TokenCredential, str]:
    """The Airflow workers' identity, chosen from the environment, and how to name it.

    - `AZURE_FEDERATED_TOKEN_FILE` set: workload identity federation. The file holds a token of
      the workers' own OIDC issuer (a Kubernetes service account token, a CI job's OIDC token),
      which Entra ID exchanges for an access token of the app or managed identity
      `AZURE_CLIENT_ID` in tenant `AZURE_TENANT_ID`, through a federated credential that trusts
      that issuer and subject. No secret is stored anywhere.
    - Otherwise `DefaultAzureCredential`: a managed identity (`AZURE_CLIENT_ID` picks a
      user-assigned one), or a developer's Azure CLI sign-in.

    Chosen here rather than left to `DefaultAzureCredential`'s chain, so that a federation that
    fails names its token file instead of falling through to a managed identity that is not there.
    """
    client_id = env.get(MANAGED_IDENTITY_CLIENT_ID, "").strip() or None
    token_file = env.get(FEDERATED_TOKEN_FILE, "").strip() or None
    if token_file is None:
        from azure.identity import DefaultAzureCredential

        identity = (
            f"the managed identity with client id {client_id}" if client_id
            else "DefaultAzureCredential (environment, workload identity, managed identity, "
            "Azure CLI)"
        )  # fmt: skip
        return DefaultAzureCredential(managed_identity_client_id=client_id), identity
    tenant_id = env.get(TENANT_ID, "").strip() or None
    if client_id is None or tenant_id is None:
        raise ConfigurationError(
            f"{FEDERATED_TOKEN_FILE} is set, so the workers use workload identity federation, "
            f"which also needs {MANAGED_IDENTITY_CLIENT_ID} (the identity's client id) and "
            f"{TENANT_ID}"
        )
    if not os.path.isfile(token_file):
        raise ConfigurationError(
            f"{FEDERATED_TOKEN_FILE} names {token_file}, which is not a file: the platform "
            "writes the OIDC token there (a projected service account token, a CI job's token)"
        )
    from azure.identity import WorkloadIdentityCredential

    options: dict[str, Any] = {}
    authority = env.get(AUTHORITY_HOST, "").strip()
    if authority:
        options["authority"] = authority
        # An Entra ID of one's own (a private cloud) is known to its owner, not to MSAL.
        host = authority.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        options["disable_instance_discovery"] = host not in ENTRA_HOSTS
    credential = WorkloadIdentityCredential(
        tenant_id=tenant_id, client_id=client_id, token_file_path=token_file, **options
    )
    identity = (
        f"workload identity federation (client id {client_id}, tenant {tenant_id}, "
        f"token file {token_file})"
    )
    return credential, identity


@contextmanager
def _service_bus_errors(namespace: str, queue_name: str) -> Iterator[None]:
    """Service Bus failures as bridge errors, by exception class."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.servicebus import exceptions as sb

    where = f"Service Bus queue {queue_name!r} in {namespace}"
    try:
        yield
    except sb.MessageSizeExceededError as exc:
        raise PermanentError(f"submission too large for {where}") from exc
    # What an operator's deployment fixes, or what heals by itself (a queue `azd up` is still
    # creating, a role assignment still propagating): the task fails with retries, never for good.
    except (sb.MessagingEntityNotFoundError, sb.MessagingEntityDisabledError) as exc:
        raise _missing(where) from exc
    except sb.ServiceBusAuthorizationError as exc:
        raise BlockedError(
            f"{where} refused the identity: it needs the 'Azure Service Bus Data Sender' role "
            "(a new assignment takes minutes to apply)",
            cause=BlockedError.PERMISSION,
        ) from exc
    except ClientAuthenticationError as exc:
        raise BlockedError(
            f"no credential could get a token for {where}: check the workers' managed identity "
            f"and {MANAGED_IDENTITY_CLIENT_ID}",
            cause=BlockedError.CREDENTIALS,
        ) from exc
    except sb.ServiceBusAuthenticationError as exc:
        # Service Bus refuses the token of an entity that does not exist with a 404.
        if getattr(exc.inner_exception, "status_code", None) == 404:
            raise _missing(where) from exc
        raise TransientError(f"{where} unavailable: {type(exc).__name__}") from exc
    except (
        sb.ServiceBusConnectionError,
        sb.ServiceBusCommunicationError,
        sb.OperationTimeoutError,
        sb.ServiceBusServerBusyError,
        sb.ServiceBusQuotaExceededError,
    ) as exc:
        raise TransientError(f"{where} unavailable: {type(exc).__name__}") from exc


def _missing(where: str) -> BlockedError:
    return BlockedError(
        f"{where} does not exist or is disabled (yet): deploy infra/, or name the queue the "
        "bridge listens on",
        cause=BlockedError.MISSING_RESOURCE,
    )


__all__ = [
    "DEFAULT_QUEUE",
    "EMULATOR_KEY",
    "EMULATOR_KEY_NAME",
    "SERVICEBUS_EMULATOR",
    "SERVICEBUS_NAMESPACE",
    "SUBMISSION_QUEUE",
    "ServiceBusSender",
    "SubmissionSender",
    "emulator_connection_string",
    "message_properties",
    "sender_from_env",
    "service_bus_message",
]
