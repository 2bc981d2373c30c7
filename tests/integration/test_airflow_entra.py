"""The bridge signs in to a real Airflow 3 with its managed identity's Entra ID token, and nothing
else: the shipped auth manager (`bridge.provider.entra.simple`) checks it, and every token that
should be refused is.

Entra ID is the local identity service (`bridge.local.identity`): App Service's managed identity
endpoint, which azure-identity's `ManagedIdentityCredential` calls unchanged, and the tenant's
published keys, which Airflow's auth manager fetches. Airflow's own tokens, its task tokens and its
execution API keep their own checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.identity import ManagedIdentityCredential
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge import health
from bridge.adapters.airflow import AirflowRest, EntraAccess
from bridge.errors import BlockedError
from bridge.local import demo
from bridge.local.airflow import LocalAirflow
from bridge.local.credential import LocalCredential
from bridge.local.identity import LocalApp, LocalIdentity, LocalPrincipal
from bridge.local.process import loopback_http
from bridge.local.stack import StackOptions
from bridge.settings import Settings

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "fab_dags"
REPORT = "bridge://fab/report"
APP_ROLE = "AzureMLBridge"
APP = LocalApp("airflow-entra-test")
# An identity of the same tenant that was never assigned the app role.
STRANGER = LocalPrincipal()


@pytest.fixture(scope="module")
def identity() -> Iterator[LocalIdentity]:
    bridge = LocalPrincipal(roles={APP.client_id: [APP_ROLE]})
    with LocalIdentity(APP, bridge, STRANGER) as running:
        yield running


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, identity: LocalIdentity
) -> Iterator[LocalAirflow]:
    home = tmp_path_factory.mktemp("entra")
    dags = shutil.copytree(DAGS, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    local = LocalAirflow(home, dags, entra=identity.airflow_options(f"{APP_ROLE}=op"))
    with local.start():
        local.wait_for_dags(["fab_assets", "fab_allowed"], timeout=90)
        yield local


@pytest.fixture
def app_service(identity: LocalIdentity, monkeypatch: pytest.MonkeyPatch) -> LocalIdentity:
    """The variables App Service sets for a Function App with a managed identity."""
    for name, value in identity.environment().items():
        monkeypatch.setenv(name, value)
    return identity


def entra_bridge(airflow: LocalAirflow, app: LocalApp, principal: LocalPrincipal) -> AirflowRest:
    credential = ManagedIdentityCredential(client_id=principal.client_id)
    access = EntraAccess(credential, app.identifier_uri, principal.client_id)
    return AirflowRest(airflow.base_url, entra=access)


def get_assets(airflow: LocalAirflow, token: str) -> tuple[int, str]:
    status, body = loopback_http(
        "GET", f"{airflow.base_url}/api/v2/assets?limit=1",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    return status, body.decode()


def test_the_identity_token_posts_events_and_triggers_runs_with_no_secret(
    airflow: LocalAirflow, app_service: LocalIdentity
) -> None:
    bridge = entra_bridge(airflow, APP, app_service.principal)
    mark = f"effect-{uuid.uuid4()}"

    bridge.post_asset_event(REPORT, {"effect_id": mark})

    assert bridge.asset_event_posted(REPORT, mark, time.time() - 60)
    assert bridge.trigger_dag_run("fab_allowed", f"bridge__{uuid.uuid4()}", {}) is True
    assert bridge.identity == f"managed identity {app_service.principal.client_id} (Entra ID)"
    # azure-identity asked App Service's endpoint for the app's URI, as the resource; once.
    client = app_service.principal.client_id
    asked = [r for r in app_service.requests if r.get("client_id") == client]
    assert len(asked) == 1, asked
    assert asked[-1]["resource"] == APP.identifier_uri
    assert asked[-1]["api-version"] == "2019-08-01"
    expires = bridge.session.expires_at
    assert expires is not None and expires > time.time() + 3000


def test_airflows_own_tokens_still_work_beside_entra(airflow: LocalAirflow) -> None:
    status, body = loopback_http(
        "POST", f"{airflow.base_url}/auth/token",
        json.dumps({"username": airflow.username, "password": airflow.password}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201, body
    assert get_assets(airflow, json.loads(body)["access_token"])[0] == 200


def refusals(identity: LocalIdentity) -> dict[str, tuple[str, int, str]]:
    """Each token Airflow must refuse: the status it must answer, and the reason the API server
    logs (the auth manager's, or Airflow's own check for a token not from the pinned tenant)."""
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    roles = {"roles": [APP_ROLE]}
    elsewhere = f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"
    none = "carries none of the app roles"
    return {
        "no app role": (identity.mint({"roles": []}), 403, none),
        "another app role": (identity.mint({"roles": ["Reader"]}), 403, none),
        "another audience": (
            identity.mint({**roles, "aud": str(uuid.uuid4())}), 403, "Audience doesn't match",
        ),
        "another issuer": (
            identity.mint({**roles, "iss": elsewhere}), 403, "JWT token is not valid",
        ),
        "expired": (identity.mint(roles, lifetime=-3600), 401, "Signature has expired"),
        "unknown kid": (
            identity.mint(roles, key=other_key, kid="not-published"), 403,
            "signed with an unknown key 'not-published'",
        ),
        "a published kid, another key": (
            identity.mint(roles, key=other_key), 403, "Signature verification failed",
        ),
        "HS256": (
            identity.mint(roles, key=secrets.token_bytes(32), algorithm="HS256"), 403,
            "signed with 'HS256'",
        ),
        "unsigned": (
            jwt.encode({**roles, "iss": identity.issuer(), "aud": APP.client_id}, None, "none"),
            403, "signed with 'none'",
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["no app role", "another app role", "another audience", "another issuer", "expired",
     "unknown kid", "a published kid, another key", "HS256", "unsigned"],
)  # fmt: skip
def test_every_token_it_must_not_trust_is_refused(
    airflow: LocalAirflow, identity: LocalIdentity, case: str
) -> None:
    token, status, reason = refusals(identity)[case]
    log = airflow.logs / "api-server.log"
    before = log.stat().st_size
    assert get_assets(airflow, token)[0] == status
    with log.open(errors="replace") as lines:
        lines.seek(before)
        assert reason in lines.read()


def test_a_v1_token_from_the_same_tenant_is_taken_too(
    airflow: LocalAirflow, identity: LocalIdentity
) -> None:
    token = identity.mint({
        "roles": [APP_ROLE], "iss": identity.issuer(1), "aud": identity.app.identifier_uri,
        "appid": identity.principal.client_id, "ver": "1.0",
    })  # fmt: skip
    assert get_assets(airflow, token)[0] == 200


def task_token(airflow: LocalAirflow) -> str:
    """A token as Airflow gives a running task, for the execution API (Airflow's own generator)."""
    script = (
        "import uuid\n"
        "from airflow.api_fastapi.execution_api.app import _jwt_generator\n"
        "print(_jwt_generator().generate({'sub': str(uuid.uuid4())}))\n"
    )
    out = airflow.python(script)
    return out.strip().splitlines()[-1]


def test_a_task_token_is_refused_by_the_public_api(airflow: LocalAirflow) -> None:
    token = task_token(airflow)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == (
        "urn:airflow.apache.org:task"
    )
    assert get_assets(airflow, token)[0] == 403


def test_an_entra_token_is_refused_by_the_execution_api(
    airflow: LocalAirflow, identity: LocalIdentity
) -> None:
    token = identity.mint({"roles": [APP_ROLE]})
    status, body = loopback_http(
        "GET", f"{airflow.base_url}/execution/variables/anything",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert status in (401, 403), body
    # ...which takes a task token (no such variable: 404, past authentication).
    status, body = loopback_http(
        "GET", f"{airflow.base_url}/execution/variables/anything",
        headers={"Authorization": f"Bearer {task_token(airflow)}"},
    )  # fmt: skip
    assert status not in (401, 403), body


def test_an_identity_without_the_app_role_blocks_naming_it(
    airflow: LocalAirflow, app_service: LocalIdentity
) -> None:
    bridge = entra_bridge(airflow, APP, STRANGER)
    with pytest.raises(BlockedError) as refused:
        bridge.check()
    assert refused.value.cause == BlockedError.PERMISSION
    assert "lacks the app role" in str(refused.value)
    assert STRANGER.client_id in str(refused.value)


def test_an_identity_endpoint_that_refuses_blocks_on_credentials(
    airflow: LocalAirflow, app_service: LocalIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-platforms")
    bridge = entra_bridge(airflow, APP, app_service.principal)
    with pytest.raises(BlockedError) as refused:
        bridge.check()
    assert refused.value.cause == BlockedError.CREDENTIALS
    assert APP.identifier_uri in str(refused.value)


def test_the_demo_runs_the_whole_loop_with_no_airflow_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make demo AIRFLOW_AUTH=entra`: the local Airflow runs the shipped auth manager, the bridge
    holds no Airflow password or token, and its signing key is a secret in the local Key Vault;
    App Service's variables are gone afterwards."""
    code = demo.run(StackOptions(workdir=tmp_path, airflow_auth="entra", key_vault=True))
    out = capsys.readouterr().out

    assert code == 0, out
    assert "no Airflow password or token in its settings" in out
    assert "the signing key: secret 'signing-key' in Key Vault https://127.0.0.1:" in out
    assert "consumer DAG azureml_model_ready succeeded" in out
    assert re.search(
        r"airflow create_asset_event .* managed identity [0-9a-f-]{36} \(Entra ID\)", out
    )
    assert "IDENTITY_ENDPOINT" not in os.environ


def test_health_checks_the_identity_token_and_tells_its_freshness(
    airflow: LocalAirflow, app_service: LocalIdentity
) -> None:
    settings = Settings(
        azureml_subscription_id="00000000-0000-0000-0000-000000000000",
        azureml_resource_group="rg",
        azureml_workspace="ws",
        ledger_connection_string="UseDevelopmentStorage=true",
        airflow_url=airflow.base_url,
        airflow_auth="entra",
        airflow_audience=APP.identifier_uri,
        managed_identity_client_id=app_service.principal.client_id,
        signing_key=secrets.token_hex(32),
    )
    credentials: dict[str, Any] = {}

    found = health.problems(settings, {}, credential=LocalCredential(), freshness=credentials)

    assert found == []
    assert credentials["airflow"]["auth"] == "entra"
    assert 3500 < credentials["airflow"]["token_expires_in_seconds"] <= 3600
    assert credentials["identity"]["Azure ML"]["expires_in_seconds"] > 0
    assert all(token not in json.dumps(credentials) for token in ("eyJ", "Bearer"))

    # The same bridge, its identity not assigned the app role: named, and nothing else.
    stranger = dataclasses.replace(settings, managed_identity_client_id=STRANGER.client_id)
    [problem] = health.problems(stranger, {}, credential=LocalCredential())
    assert "lacks the app role" in problem and STRANGER.client_id in problem
