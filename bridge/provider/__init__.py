"""The Airflow side of the bridge: the operator a DAG uses and the sender it puts submissions with.

Imports nothing from the Function App side. `bridge.provider.senders` has no Airflow import, so
the benchmarks and tests can send as the operator does without Airflow installed; the operator is
therefore loaded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.provider.operators import SubmitAzureMLJobOperator

__all__ = ["SubmitAzureMLJobOperator", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager lists (the `apache_airflow_provider` entry point): the
    operator, its Studio link, and the connection type. Cheap: it imports nothing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = [version("airflow-azureml-bridge")]
    except PackageNotFoundError:
        versions = []
    return {
        "package-name": "airflow-azureml-bridge",
        "name": "Azure ML Bridge",
        "description": "Submit Azure Machine Learning jobs without holding a worker slot; their "
        "outcomes come back as asset events.",
        "versions": versions,
        "integrations": [
            {
                "integration-name": "Azure ML Bridge",
                "external-doc-url": "https://learn.microsoft.com/azure/machine-learning/",
                "tags": ["azure"],
            }
        ],
        "operators": [
            {
                "integration-name": "Azure ML Bridge",
                "python-modules": ["bridge.provider.operators"],
            }
        ],
        "hooks": [
            {"integration-name": "Azure ML Bridge", "python-modules": ["bridge.provider.hooks"]}
        ],
        "connection-types": [
            {
                "connection-type": "azureml_bridge",
                "hook-class-name": "bridge.provider.hooks.AzureMLBridgeHook",
                "hook-name": "Azure ML Bridge",
            }
        ],
        "extra-links": ["bridge.provider.links.AzureMLStudioLink"],
    }


def __getattr__(name: str) -> Any:
    if name == "SubmitAzureMLJobOperator":
        from bridge.provider.operators import SubmitAzureMLJobOperator

        return SubmitAzureMLJobOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
