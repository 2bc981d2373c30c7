"""The bridge's least-privileged Airflow role under the FAB auth manager, made by the script the
docs give (`infra/airflow/bridge-role.sh`), on a real Airflow 3 with FAB: the bridge may read
assets, post asset events and trigger the DAGs the role names, and is refused everything else."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.airflow import AirflowRest
from bridge.errors import BlockedError
from bridge.local.airflow import LocalAirflow
from bridge.local.process import loopback_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "airflow" / "bridge-role.sh"
DAGS = Path(__file__).parent / "fab_dags"
REPORT = "bridge://fab/report"
ROLE = "AzureMLBridge"


@pytest.fixture(scope="module")
def fab_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    home = tmp_path_factory.mktemp("fab")
    dags = shutil.copytree(DAGS, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    local = LocalAirflow(home, dags, auth_manager="fab")
    with local.start():
        local.wait_for_dags(["fab_assets", "fab_allowed", "fab_forbidden"], timeout=90)
        yield local


def role_script(airflow: LocalAirflow, *dags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), ROLE, *dags], env=airflow.environment(),
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_the_scripted_role_does_the_bridges_work_and_nothing_else(
    fab_airflow: LocalAirflow,
) -> None:
    done = role_script(fab_airflow, "fab_allowed")
    assert done.returncode == 0, done.stdout + done.stderr
    password = secrets.token_urlsafe(16)
    fab_airflow.cli("users", "create", "--username", "azureml-bridge", f"--password={password}",
                    "--role", ROLE, "--firstname", "Azure", "--lastname", "ML",
                    "--email", "azureml-bridge@example.invalid")  # fmt: skip
    bridge = AirflowRest(fab_airflow.base_url, "azureml-bridge", password)

    mark = f"effect-{uuid.uuid4()}"
    bridge.post_asset_event(REPORT, {"effect_id": mark})
    assert bridge.asset_event_posted(REPORT, mark, time.time() - 60)
    assert bridge.trigger_dag_run("fab_allowed", f"bridge__{uuid.uuid4()}", {}) is True
    with pytest.raises(BlockedError, match=r"trigger_dag_run\(fab_forbidden/.*HTTP 403"):
        bridge.trigger_dag_run("fab_forbidden", f"bridge__{uuid.uuid4()}", {})

    # Nothing else the API offers: connections, variables, pools, configuration, other DAGs.
    token = bridge.access_token
    assert token
    for path in ("/api/v2/connections", "/api/v2/variables", "/api/v2/pools",
                 "/api/v2/config", "/api/v2/dags/fab_forbidden"):  # fmt: skip
        status, _ = loopback_http("GET", fab_airflow.base_url + path, None,
                                  {"Authorization": f"Bearer {token}"})  # fmt: skip
        assert status == 403, path
    # Running the script again changes nothing (a new DAG is added by running it with it).
    again = role_script(fab_airflow, "fab_allowed")
    assert again.returncode == 0, again.stdout + again.stderr
