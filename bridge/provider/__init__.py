"""The Airflow side of the bridge: the operators a DAG uses and the sender they put submissions
with.

Imports nothing from the Function App side. `bridge.provider.senders`, `.studio` and `.templates`
have no Airflow import, so the benchmarks and tests can send as the operators do without Airflow
installed; the operators are therefore loaded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.provider.templates import from_triggering_event

if TYPE_CHECKING:
    from bridge.provider.operators import (
        CancelAzureMLJobOperator,
        DeployAzureMLModelOperator,
        InvokeAzureMLBatchEndpointOperator,
        RegisterAzureMLModelOperator,
        SetAzureMLTrafficOperator,
        ShareAzureMLModelOperator,
        SubmitAzureMLJobOperator,
    )

OPERATORS = (
    "SubmitAzureMLJobOperator",
    "RegisterAzureMLModelOperator",
    "DeployAzureMLModelOperator",
    "SetAzureMLTrafficOperator",
    "InvokeAzureMLBatchEndpointOperator",
    "CancelAzureMLJobOperator",
    "ShareAzureMLModelOperator",
)

__all__ = [
    "CancelAzureMLJobOperator",
    "DeployAzureMLModelOperator",
    "InvokeAzureMLBatchEndpointOperator",
    "RegisterAzureMLModelOperator",
    "SetAzureMLTrafficOperator",
    "ShareAzureMLModelOperator",
    "SubmitAzureMLJobOperator",
    "from_triggering_event",
    "get_provider_info",
]


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager lists (the `apache_airflow_provider` entry point): the
    operators, their Studio links, and the connection type. Cheap: it imports nothing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = [version("airflow-azureml-bridge")]
    except PackageNotFoundError:
        versions = []
    return {
        "package-name": "airflow-azureml-bridge",
        "name": "Azure ML Bridge",
        "description": "Submit Azure Machine Learning jobs and model lifecycle operations "
        "(register, deploy, traffic, batch scoring, cancel, share) without holding a worker "
        "slot; their outcomes come back as asset events.",
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
        "extra-links": [
            "bridge.provider.links.AzureMLStudioLink",
            "bridge.provider.links.AzureMLModelLink",
            "bridge.provider.links.AzureMLEndpointLink",
        ],
    }


def __getattr__(name: str) -> Any:
    if name in OPERATORS:
        from bridge.provider import operators

        return getattr(operators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
