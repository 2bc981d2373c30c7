"""`AzureMLBridgeHook`: the bridge's Airflow connection type, `azureml_bridge`.

One connection says where a DAG's submissions go. It holds no secret, because the workers
authenticate with their own identity:

- **Host**: the Service Bus namespace, fully qualified (`myns.servicebus.windows.net`);
- **Schema**: the submission queue (default `submissions`);
- **Extra**: `workspace_id`, the Azure ML workspace's ARM id (for the Studio link);
  `managed_identity_client_id`, a user-assigned identity of the workers; and, for local
  development only, `use_development_emulator: true`, when Host is a Service Bus development
  emulator's `host:port` (the local stack's, or Microsoft's container).

Airflow finds it wherever connections live: its metadata database, an `AIRFLOW_CONN_*`
environment variable, or a secrets backend. What the operator uses, first found wins:

1. the operator's own arguments (`queue_name=`, `servicebus_namespace=`);
2. the connection `conn_id` (default `azureml_bridge_default`, used when it exists);
3. the environment variables the operator read before connections existed (`BRIDGE_*`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from bridge.errors import ConfigurationError
from bridge.provider.senders import (
    MANAGED_IDENTITY_CLIENT_ID,
    SERVICEBUS_EMULATOR,
    SERVICEBUS_NAMESPACE,
    SUBMISSION_QUEUE,
    WORKSPACE_ID,
)

CONN_TYPE = "azureml_bridge"
DEFAULT_CONN_ID = "azureml_bridge_default"
# What a connection decides: none of these is read from the environment once one is found.
TRANSPORT_SETTINGS = (SERVICEBUS_NAMESPACE, SERVICEBUS_EMULATOR, SUBMISSION_QUEUE)


@dataclass(frozen=True)
class BridgeConnection:
    """Where submissions go, as one `azureml_bridge` connection says."""

    conn_id: str
    namespace: str | None
    queue: str | None
    workspace_id: str | None
    managed_identity_client_id: str | None
    development_emulator: bool = False

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with this connection's settings in place of the transport settings it had."""
        merged = {key: value for key, value in env.items() if key not in TRANSPORT_SETTINGS}
        given = {
            SERVICEBUS_NAMESPACE: self.namespace,
            SERVICEBUS_EMULATOR: "true" if self.development_emulator else None,
            SUBMISSION_QUEUE: self.queue,
            WORKSPACE_ID: self.workspace_id,
            MANAGED_IDENTITY_CLIENT_ID: self.managed_identity_client_id,
        }
        merged.update({key: value for key, value in given.items() if value})
        return merged


class AzureMLBridgeHook(BaseHook):  # type: ignore[misc,unused-ignore]
    """Reads an `azureml_bridge` connection; see the module's docstring for its fields."""

    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Azure ML Bridge"

    def __init__(self, conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_conn(self) -> BridgeConnection:
        return self.bridge_connection()

    def bridge_connection(self) -> BridgeConnection:
        connection = self.get_connection(self.conn_id)
        extra = connection.extra_dejson or {}

        def text(value: object) -> str | None:
            return str(value).strip() or None if value is not None else None

        return BridgeConnection(
            conn_id=self.conn_id,
            namespace=text(connection.host),
            queue=text(connection.schema),
            workspace_id=text(extra.get("workspace_id")),
            managed_identity_client_id=text(extra.get("managed_identity_client_id")),
            development_emulator=_flag(extra.get("use_development_emulator")),
        )

    @classmethod
    def find(cls, conn_id: str | None) -> BridgeConnection | None:
        """The connection `conn_id`, or None when the default one does not exist. A connection
        named explicitly must exist: its absence is an error naming it."""
        wanted = conn_id or DEFAULT_CONN_ID
        try:
            return cls(wanted).bridge_connection()
        except AirflowNotFoundException:
            if conn_id and conn_id != DEFAULT_CONN_ID:
                raise
            return None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "password", "port"],
            "relabeling": {"host": "Service Bus namespace", "schema": "Submission queue"},
            "placeholders": {
                "host": "myns.servicebus.windows.net",
                "schema": "submissions",
                "extra": '{"workspace_id": "/subscriptions/.../workspaces/ws", '
                '"managed_identity_client_id": "<client id>"}',
            },
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        return {
            "workspace_id": StringField(
                lazy_gettext("Azure ML workspace ARM id"), widget=BS3TextFieldWidget()
            ),
            "managed_identity_client_id": StringField(
                lazy_gettext("Managed identity client id"), widget=BS3TextFieldWidget()
            ),
        }


def _flag(value: object) -> bool:
    """A JSON boolean, or the text `true`/`false` a form or an environment variable gives."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false", ""):
        raise ConfigurationError("the connection's use_development_emulator must be true or false")
    return text == "true"
