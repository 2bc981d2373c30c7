"""The Airflow side of the bridge: the operator a DAG uses and the senders it puts submissions with.

Imports nothing from the Function App side. `bridge.provider.senders` has no Airflow import, so
the local queue worker can read `QueueEnvelope` from it without Airflow installed; the operator is
therefore loaded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.provider.operators import SubmitAzureMLJobOperator

__all__ = ["SubmitAzureMLJobOperator"]


def __getattr__(name: str) -> Any:
    if name == "SubmitAzureMLJobOperator":
        from bridge.provider.operators import SubmitAzureMLJobOperator

        return SubmitAzureMLJobOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
