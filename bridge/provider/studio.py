"""Azure ML Studio's pages for what the bridge's operators send: a job, a model version, a model
in a registry, an online endpoint. Pure: no Airflow, no Azure SDK.

The shapes are Studio's own, as its pages link to each other: `runs/<job>`,
`model/<name>:<version>/details`, `endpoints/realtime/<endpoint>/detail` (each with `wsid`, the
workspace's ARM id), and `registries/<registry>/models/<name>/version/<version>`, which belongs to
no workspace.
"""

from __future__ import annotations

from urllib.parse import quote

STUDIO = "https://ml.azure.com"


def job_url(job_name: str, workspace_id: str | None) -> str | None:
    """The job's page, when the workspace's ARM id is known."""
    if not workspace_id:
        return None
    return f"{STUDIO}/runs/{_part(job_name)}?wsid={workspace_id}"


def model_url(name: str, version: str | None, workspace_id: str | None) -> str | None:
    """A model version's page in the workspace; None while the version is not known (Azure ML
    picks the next one when the registration runs)."""
    if not workspace_id or not version:
        return None
    return f"{STUDIO}/model/{_part(name)}:{_part(version)}/details?wsid={workspace_id}"


def registry_model_url(registry: str, name: str, version: str) -> str:
    """A model version's page in an Azure ML registry."""
    return f"{STUDIO}/registries/{_part(registry)}/models/{_part(name)}/version/{_part(version)}"


def endpoint_url(endpoint: str, workspace_id: str | None) -> str | None:
    """An online endpoint's page: its deployments, their traffic and its scoring URI."""
    if not workspace_id:
        return None
    return f"{STUDIO}/endpoints/realtime/{_part(endpoint)}/detail?wsid={workspace_id}"


def _part(text: str) -> str:
    """One path segment: Azure ML's names carry no reserved character, a template's typo might."""
    return quote(str(text), safe="")
