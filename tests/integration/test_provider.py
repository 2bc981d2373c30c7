"""The bridge as an Airflow provider, in the local Airflow 3: listed by the providers manager with
its connection type and extra link, configured by a connection, and its "Azure ML Studio" button
resolved by Airflow's REST API."""

from __future__ import annotations

import json

import pytest

from bridge.local.stack import Stack

pytestmark = pytest.mark.integration


def cli_json(stack: Stack, *args: str) -> list[dict[str, str]]:
    """An `airflow ... --output json` command's answer (Airflow may log warnings before it)."""
    assert stack.airflow is not None
    output = stack.airflow.cli(*args, "--output", "json")
    parsed: list[dict[str, str]] = json.loads(output[output.index("[") :])
    return parsed


def test_airflow_lists_the_provider_its_connection_type_and_its_link(loop_stack: Stack) -> None:
    providers = {p["package_name"]: p for p in cli_json(loop_stack, "providers", "list")}
    assert "airflow-azureml-bridge" in providers
    assert "Azure Machine Learning" in providers["airflow-azureml-bridge"]["description"]
    hooks = {h["connection_type"]: h for h in cli_json(loop_stack, "providers", "hooks")}
    assert hooks["azureml_bridge"]["class"] == "bridge.provider.hooks.AzureMLBridgeHook"
    assert hooks["azureml_bridge"]["hook_name"] == "Azure ML Bridge"
    links = [link["extra_link_class_name"] for link in cli_json(loop_stack, "providers", "links")]
    assert "bridge.provider.links.AzureMLStudioLink" in links


def test_the_studio_link_resolves_through_the_rest_api_and_the_demo_used_a_connection(
    loop_stack: Stack,
) -> None:
    from airflow_client.client import ExtraLinksApi

    airflow = loop_stack.airflow
    assert airflow is not None
    run_id = airflow.trigger("azureml_train")
    assert airflow.wait_for_run("azureml_train", run_id, timeout=60) == "success"
    job = airflow.xcom("azureml_train", run_id, "submit_training")

    links = ExtraLinksApi(airflow.client()).get_extra_links("azureml_train", run_id,
                                                            "submit_training")  # fmt: skip

    assert links.extra_links == {
        "Azure ML Studio": f"https://ml.azure.com/runs/{job}?wsid={loop_stack.emulator.workspace_id}"
    }
    # The local Airflow knows the queue only through the connection azureml_bridge_default
    # (AIRFLOW_CONN_*): no BRIDGE_* variable is set for it.
    assert not any(name.startswith("BRIDGE_") for name in airflow.extra_env)
    log = airflow.task_log("azureml_train", run_id, "submit_training")
    assert "Sending through Airflow connection azureml_bridge_default" in log
