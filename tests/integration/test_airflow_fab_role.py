"""The bridge's least-privileged Airflow role under the FAB auth manager, made by the script the
docs give (`infra/airflow/bridge-role.sh`), on a real Airflow 3 with FAB: the bridge may read
assets, post asset events and trigger the DAGs the role names, and is refused everything else.

The auth manager is the shipped one that also takes Entra ID tokens (`bridge.provider.entra.fab`):
with a password, the bridge's user works as under FAB's own; with its managed identity's token,
the bridge acts as a FAB service account that nobody knows a password of."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.identity import ManagedIdentityCredential

from bridge.adapters.airflow import AirflowRest, EntraAccess
from bridge.errors import BlockedError
from bridge.local.airflow import LocalAirflow
from bridge.local.identity import LocalApp, LocalIdentity, LocalPrincipal
from bridge.local.process import loopback_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "airflow" / "bridge-role.sh"
DAGS = Path(__file__).parent / "fab_dags"
REPORT = "bridge://fab/report"
ROLE = "AzureMLBridge"
APP = LocalApp("airflow-fab-test")
APP_ROLE = "AzureMLBridge"
SERVICE_ACCOUNT = "azureml-bridge-entra"  # the FAB user the app role acts as
BRIDGE = LocalPrincipal(roles={APP.client_id: [APP_ROLE]})
STRANGER = LocalPrincipal(roles={APP.client_id: ["Reader"]})


@pytest.fixture(scope="module")
def identity() -> Iterator[LocalIdentity]:
    with LocalIdentity(APP, BRIDGE, STRANGER) as running:
        yield running


@pytest.fixture(scope="module")
def fab_airflow(
    tmp_path_factory: pytest.TempPathFactory, identity: LocalIdentity
) -> Iterator[LocalAirflow]:
    home = tmp_path_factory.mktemp("fab")
    dags = shutil.copytree(DAGS, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    trust = identity.airflow_options(f"{APP_ROLE}={SERVICE_ACCOUNT}")
    local = LocalAirflow(home, dags, auth_manager="fab", entra=trust)
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


def entra_bridge(airflow: LocalAirflow, principal: LocalPrincipal) -> AirflowRest:
    access = EntraAccess(ManagedIdentityCredential(client_id=principal.client_id),
                         APP.identifier_uri, principal.client_id)  # fmt: skip
    return AirflowRest(airflow.base_url, entra=access)


def test_the_identity_token_acts_as_a_service_account_with_the_scripted_role(
    fab_airflow: LocalAirflow, identity: LocalIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in identity.environment().items():
        monkeypatch.setenv(name, value)
    done = role_script(fab_airflow, "fab_allowed")
    assert done.returncode == 0, done.stdout + done.stderr
    bridge = entra_bridge(fab_airflow, BRIDGE)

    # Before the service account exists, the token is refused, naming what is missing: the
    # effect blocks (and heals once an operator creates it).
    with pytest.raises(BlockedError) as refused:
        bridge.check()
    assert refused.value.cause == BlockedError.PERMISSION
    assert SERVICE_ACCOUNT in (fab_airflow.logs / "api-server.log").read_text(errors="replace")

    # A service account: no password anyone knows (`--use-random-password`).
    fab_airflow.cli("users", "create", "--username", SERVICE_ACCOUNT, "--use-random-password",
                    "--role", ROLE, "--firstname", "Azure", "--lastname", "ML",
                    "--email", f"{SERVICE_ACCOUNT}@example.invalid")  # fmt: skip
    mark = f"effect-{uuid.uuid4()}"
    bridge.post_asset_event(REPORT, {"effect_id": mark})
    assert bridge.asset_event_posted(REPORT, mark, time.time() - 60)
    assert bridge.trigger_dag_run("fab_allowed", f"bridge__{uuid.uuid4()}", {}) is True
    # FAB's permissions still decide: the role names fab_allowed only.
    with pytest.raises(BlockedError, match=r"trigger_dag_run\(fab_forbidden/.*HTTP 403"):
        bridge.trigger_dag_run("fab_forbidden", f"bridge__{uuid.uuid4()}", {})

    # Another identity of the tenant, with an app role that maps to nothing: refused.
    monkeypatch.setenv("AZURE_CLIENT_ID", STRANGER.client_id)
    with pytest.raises(BlockedError, match="lacks the app role"):
        entra_bridge(fab_airflow, STRANGER).check()
