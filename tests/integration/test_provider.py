"""The bridge as an Airflow provider, in the local Airflow 3: listed by the providers manager with
its connection type and extra link, configured by a connection, and its "Azure ML Studio" button
resolved by Airflow's REST API."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bridge.local.stack import Stack

pytestmark = pytest.mark.integration

AIRFLOW_PYTHON = Path(__file__).resolve().parents[2] / ".venv-airflow" / "bin" / "python"


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


# What the hook reads from each connection, printed as JSON: run inside the Airflow venv, where
# Airflow finds the connections in AIRFLOW_CONN_* variables.
READ_CONNECTIONS = textwrap.dedent("""
    import json, sys
    from bridge.provider.hooks import AzureMLBridgeHook

    ENV = {"BRIDGE_SERVICEBUS_NAMESPACE": "env.servicebus.windows.net",
           "BRIDGE_SERVICEBUS_EMULATOR": "true", "BRIDGE_SUBMISSION_QUEUE": "from-env"}
    read = {}
    for conn_id in sys.argv[1:]:
        try:
            connection = AzureMLBridgeHook.find(conn_id)
        except Exception as exc:
            read[conn_id] = {"error": type(exc).__name__, "message": str(exc)}
        else:
            read[conn_id] = {"development_emulator": connection.development_emulator,
                             "environment": connection.environment(ENV)}
    print("READ " + json.dumps(read))
""")
EMULATOR_FLAGS: dict[str, Any] = {
    "json_true": True,
    "text_true": "true",
    "text_true_capitalised": " True ",
    "json_false": False,
    "text_false": "false",
    "text_empty": "",
    "yes": "yes",
    "one": 1,
}


def read_connections(tmp_path: Path, connections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BRIDGE_"))}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.update({f"AIRFLOW_CONN_{c.upper()}": json.dumps(v) for c, v in connections.items()})
    completed = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", READ_CONNECTIONS, *connections],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    [line] = [line for line in completed.stdout.splitlines() if line.startswith("READ ")]
    read: dict[str, Any] = json.loads(line.removeprefix("READ "))
    return read


def test_use_development_emulator_is_read_as_a_boolean_or_its_text(tmp_path: Path) -> None:
    connections = {
        name: {"conn_type": "azureml_bridge", "host": "127.0.0.1:5672", "schema": "submissions",
               "extra": {"use_development_emulator": flag}}
        for name, flag in EMULATOR_FLAGS.items()
    }  # fmt: skip
    connections["absent"] = {"conn_type": "azureml_bridge", "host": "myns.servicebus.windows.net"}

    read = read_connections(tmp_path, connections)

    flags = {name: found.get("development_emulator") for name, found in read.items()}
    assert flags == {
        "json_true": True, "text_true": True, "text_true_capitalised": True,
        "json_false": False, "text_false": False, "text_empty": False, "absent": False,
        "yes": None, "one": None,
    }  # fmt: skip
    for bad in ("yes", "one"):
        assert read[bad]["error"] == "ConfigurationError", read[bad]
        assert "use_development_emulator must be true or false" in read[bad]["message"]
    # The connection decides the transport: its Host and flag replace the environment's, so an
    # emulator flag in the environment never turns a connection's namespace into an emulator.
    assert read["text_true"]["environment"] == {
        "BRIDGE_SERVICEBUS_NAMESPACE": "127.0.0.1:5672",
        "BRIDGE_SERVICEBUS_EMULATOR": "true",
        "BRIDGE_SUBMISSION_QUEUE": "submissions",
    }
    assert read["text_false"]["environment"] == {
        "BRIDGE_SERVICEBUS_NAMESPACE": "127.0.0.1:5672",
        "BRIDGE_SUBMISSION_QUEUE": "submissions",
    }
    assert read["absent"]["environment"] == {
        "BRIDGE_SERVICEBUS_NAMESPACE": "myns.servicebus.windows.net"
    }
