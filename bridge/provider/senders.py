"""Senders of submissions to the submission queue: Service Bus in Azure, a Storage Queue locally.

Runs inside the Airflow deployment, so it imports only the contract and the queue SDKs, each
lazily: a DAG file that imports the operator pays for neither. Configuration only chooses the
transport; the message is the same on both (body, id and properties), so the Function's Service
Bus trigger and the local queue worker read one format.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.contracts import SCHEMA_ID, Submission, describe
from bridge.errors import (
    ConfigurationError,
    InvalidSubmission,
    PermanentError,
    TransientError,
    first_line,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.servicebus import ServiceBusMessage

    Credential = TokenCredential | AzureNamedKeyCredential | AzureSasCredential

SUBMISSION_QUEUE = "BRIDGE_SUBMISSION_QUEUE"
SERVICEBUS_NAMESPACE = "BRIDGE_SERVICEBUS_NAMESPACE"
LOCAL_QUEUE_CONNECTION_STRING = "BRIDGE_LOCAL_QUEUE_CONNECTION_STRING"
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

CONTENT_TYPE = "application/json"
SUBJECT = "bridge.submission"


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


class QueueEnvelope(BaseModel):
    """A Storage Queue message carrying what a Service Bus message carries outside its body.

    Storage Queue messages are plain text with no id or properties of their own, so the local
    stand-in wraps the submission JSON (a string, byte for byte the Service Bus body) in this
    JSON envelope. The text is sent as is, without base64.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str
    content_type: str = CONTENT_TYPE
    subject: str = SUBJECT
    application_properties: dict[str, str]
    body: str

    @classmethod
    def for_submission(cls, submission: Submission) -> QueueEnvelope:
        return cls(
            message_id=submission.id,
            application_properties=message_properties(submission),
            body=submission.to_json(),
        )

    def encode(self) -> str:
        return self.model_dump_json()

    @classmethod
    def decode(cls, text: str | bytes) -> QueueEnvelope:
        """Read a queue message's text; `InvalidSubmission` names what is wrong with it."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidSubmission(
                f"queue message is not a submission envelope: {describe(exc)}"
            ) from exc

    def submission(self) -> Submission:
        return Submission.parse(self.body)


class StorageQueueSender:
    """Sends to an Azure Storage Queue (Azurite locally), creating the queue on first need.

    `client_options` go to `QueueClient` (e.g. `retry_total`).
    """

    def __init__(
        self, connection_string: str, queue_name: str = DEFAULT_QUEUE, **client_options: Any
    ) -> None:
        from azure.storage.queue import QueueClient

        self.queue_name = queue_name
        # The SDK logs every request and response at INFO: in a task log that buries the task.
        client_options.setdefault("http_logging_level", logging.DEBUG)
        self._queue = QueueClient.from_connection_string(
            connection_string, queue_name, **client_options
        )

    def send(self, submission: Submission) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        text = QueueEnvelope.for_submission(submission).encode()
        with _storage_errors(self.queue_name):
            try:
                self._queue.send_message(text)
            except ResourceNotFoundError:
                # Creating only when missing keeps the common case at one request.
                self._create_queue()
                self._queue.send_message(text)

    def _create_queue(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with suppress(ResourceExistsError):  # another task created it in between
            self._queue.create_queue()

    def close(self) -> None:
        self._queue.close()


class ServiceBusSender:
    """Sends to a Service Bus queue with an Entra ID credential (the workers' managed identity).

    `credential` defaults to `DefaultAzureCredential`; `client_options` go to `ServiceBusClient`
    (e.g. `retry_total`). Nothing connects before the first `send`.
    """

    def __init__(
        self,
        namespace: str,
        queue_name: str = DEFAULT_QUEUE,
        *,
        credential: Credential | None = None,
        identity: str | None = None,
        managed_identity_client_id: str | None = None,
        **client_options: Any,
    ) -> None:
        from azure.servicebus import ServiceBusClient

        self.namespace = namespace
        self.queue_name = queue_name
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
    connection_string: str | None = None,
) -> SubmissionSender:
    """The sender the configuration asks for; arguments override the environment.

    `BRIDGE_SERVICEBUS_NAMESPACE` selects Service Bus with the managed identity,
    `BRIDGE_LOCAL_QUEUE_CONNECTION_STRING` the local Storage Queue; exactly one must be set.
    """
    queue = queue_name or env.get(SUBMISSION_QUEUE, "").strip() or DEFAULT_QUEUE
    if namespace is None and connection_string is None:
        namespace = env.get(SERVICEBUS_NAMESPACE, "").strip() or None
        connection_string = env.get(LOCAL_QUEUE_CONNECTION_STRING, "").strip() or None
        if namespace and connection_string:
            raise ConfigurationError(
                f"both {SERVICEBUS_NAMESPACE} and {LOCAL_QUEUE_CONNECTION_STRING} are set; "
                "set only one (Service Bus in Azure, the Storage Queue locally)"
            )
    if namespace:
        credential, identity = worker_credential(env)
        return ServiceBusSender(
            _checked_namespace(namespace), queue, credential=credential, identity=identity
        )
    if connection_string:
        try:
            return StorageQueueSender(connection_string, queue)
        except ValueError as exc:  # the SDK's parse error; its text never echoes the value
            raise ConfigurationError(
                f"{LOCAL_QUEUE_CONNECTION_STRING} is not a storage connection string: {exc}"
            ) from exc
    raise ConfigurationError(
        f"no submission queue configured: set {SERVICEBUS_NAMESPACE} (Service Bus, e.g. "
        f"myns.servicebus.windows.net) or {LOCAL_QUEUE_CONNECTION_STRING} (local Storage Queue)"
    )


def _checked_namespace(namespace: str) -> str:
    if "=" in namespace or ";" in namespace or "/" in namespace:
        raise ConfigurationError(
            f"{SERVICEBUS_NAMESPACE} must be a fully qualified namespace such as "
            "myns.servicebus.windows.net, not a URL or a connection string"
        )
    return namespace


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
def _storage_errors(queue_name: str) -> Iterator[None]:
    """Azure Storage failures as bridge errors, by exception class and HTTP status."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = f"storage queue {queue_name!r}"
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{where} unreachable: {type(exc).__name__}") from exc
    except ClientAuthenticationError as exc:
        raise PermanentError(f"{where} refused the credentials ({exc.status_code})") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        reason = f"{where} answered {status} {getattr(exc, 'error_code', None) or ''}".rstrip()
        if status in (408, 429) or status >= 500:
            raise TransientError(reason, retry_after=_retry_after(exc)) from exc
        raise PermanentError(reason) from exc


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
    except (sb.MessagingEntityNotFoundError, sb.MessagingEntityDisabledError) as exc:
        raise PermanentError(f"{where} does not exist or is disabled") from exc
    except sb.ServiceBusAuthorizationError as exc:
        raise PermanentError(
            f"{where} refused the identity: it needs the 'Azure Service Bus Data Sender' role"
        ) from exc
    except ClientAuthenticationError as exc:
        raise PermanentError(
            f"no credential could get a token for {where}: check the workers' managed identity "
            f"and {MANAGED_IDENTITY_CLIENT_ID}"
        ) from exc
    except (
        sb.ServiceBusConnectionError,
        sb.ServiceBusCommunicationError,
        sb.OperationTimeoutError,
        sb.ServiceBusServerBusyError,
        sb.ServiceBusQuotaExceededError,
        sb.ServiceBusAuthenticationError,
    ) as exc:
        raise TransientError(f"{where} unavailable: {type(exc).__name__}") from exc


def _retry_after(exc: HttpResponseError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    return retry_after_seconds(headers.get("Retry-After"))


__all__ = [
    "DEFAULT_QUEUE",
    "LOCAL_QUEUE_CONNECTION_STRING",
    "SERVICEBUS_NAMESPACE",
    "SUBMISSION_QUEUE",
    "QueueEnvelope",
    "ServiceBusSender",
    "StorageQueueSender",
    "SubmissionSender",
    "message_properties",
    "sender_from_env",
    "service_bus_message",
]
