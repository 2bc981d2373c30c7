"""`health` checks more than settings: that the identity gets every token the bridge needs, and
that Airflow accepts the bridge's user. Each problem is named, and no secret is shown."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any

import pytest

from bridge import health
from bridge.composition import build
from bridge.local.stack import Stack

pytestmark = pytest.mark.integration


def test_a_working_stack_has_no_problem_and_the_dev_host_says_ok(loop_stack: Stack) -> None:
    """Problems none; the blocked jobs counted are the ledger's. Other modules on this stack leave
    jobs blocked on purpose (a cancel waiting on a permission), so the count is the ledger's own
    whatever ran before, and the status is "ok" exactly when it is 0."""
    assert health.problems(loop_stack.settings) == []
    ledger = build(loop_stack.settings).ledger
    before = health.blocked(ledger)
    url = loop_stack.devhost.webhook_url.replace("/api/events", "/api/health")
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    after = health.blocked(ledger)
    ledger.close()
    assert body["problems"] == [], body
    assert body["blocked"] in (before, after), (body, before, after)
    assert body["status"] == ("blocked" if body["blocked"]["jobs"] else "ok"), body


def test_airflow_refusing_the_user_is_named_without_the_password(loop_stack: Stack) -> None:
    wrong = "wrong-" + loop_stack.settings.airflow_password
    settings = dataclasses.replace(loop_stack.settings, airflow_password=wrong)

    found = health.problems(settings)

    assert found == [
        f"Airflow at {settings.airflow_url} refused the credentials of user "
        f"{settings.airflow_username!r} (HTTP 401): a wrong or rotated password"
    ]
    assert wrong not in json.dumps(found)


def test_an_identity_without_tokens_is_named_with_each_scope(
    loop_stack: Stack, identity_with_nothing: Any
) -> None:
    in_azure = dataclasses.replace(
        loop_stack.settings,
        ledger_connection_string=None,
        ledger_endpoint="https://ledger.table.core.windows.net",
    )
    env = {"BRIDGE_SERVICEBUS__fullyQualifiedNamespace": "myns.servicebus.windows.net"}

    found = health.problems(in_azure, env, credential=identity_with_nothing)

    named = [problem.split(":")[0] for problem in found]
    assert named == [
        "the identity can get no token for Azure ML (https",
        "the identity can get no token for Table Storage (https",
        "the identity can get no token for Service Bus (https",
    ]
    assert "(https://servicebus.azure.net/.default): EnvironmentCredential" in found[2]


def test_a_static_api_token_instead_of_a_password_is_checked_too(loop_stack: Stack) -> None:
    from bridge.adapters.airflow import AirflowRest

    minted = AirflowRest(
        loop_stack.settings.airflow_url,
        loop_stack.settings.airflow_username,
        loop_stack.settings.airflow_password,
    )
    minted.check()
    by_token = dataclasses.replace(
        loop_stack.settings,
        airflow_username="",
        airflow_password="",
        airflow_token=minted.access_token,
    )
    assert health.problems(by_token) == []
    # A JWT of Airflow's shape that Airflow never signed (built here, so no scan mistakes it).
    unsigned = ".".join(("eyJhbGciOiJIUzUxMiJ9", "e30", "forged-signature"))
    forged = dataclasses.replace(by_token, airflow_token=unsigned)
    [problem] = health.problems(forged)
    assert "refused the static API token (BRIDGE_AIRFLOW_TOKEN)" in problem
    assert "forged-signature" not in problem
