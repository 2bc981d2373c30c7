"""The webhook under generated deliveries (hypothesis), with the production bridge on a real ledger
(Azurite): no exception escapes, no input that holds no well-formed run event is answered 5xx,
and every refusal or rejection says why. Airflow and Azure ML sit at closed ports: nothing
generated here may reach them, since no generated event is for a job the ledger holds."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.composition import build
from bridge.local.azurite import Azurite
from bridge.local.process import free_port
from bridge.service import Bridge
from bridge.settings import Settings
from bridge.webhook import answer
from tests.unit.test_fuzz import bodies, fuzz

pytestmark = pytest.mark.integration

CONTENT_TYPES = ["application/json", "application/cloudevents-batch+json; charset=utf-8",
                 "text/plain", "application/x-www-form-urlencoded", ""]  # fmt: skip
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(CONTENT_TYPES) | st.text(max_size=20),
        "aeg-event-type": st.sampled_from(["Notification", "SubscriptionValidation"]),
        "WebHook-Request-Origin": st.sampled_from(["eventgrid.azure.net", ""]),
    },
)
ANSWERS = {200, 400, 405, 413, 415}
# Well-formed run events, in either schema, for jobs the ledger does not hold: they reach the
# ledger (one read each) and are ignored; mixed into batches with whatever `bodies` makes.
run_events = st.builds(
    lambda schema, kind, job, status, tags: {
        "id": secrets.token_hex(6), "subject": f"experiments/e/runs/{job}",
        "data": {"runId": job, "runStatus": status, "runTags": tags},
        **({"specversion": "1.0", "type": kind, "source": "/subscriptions/x", "time": None}
           if schema == "cloudevents" else
           {"eventType": kind, "topic": "/subscriptions/x", "eventTime": "2026-11-26T10:00:00Z",
            "dataVersion": "2"}),
    },
    st.sampled_from(["eventgrid", "cloudevents"]),
    st.sampled_from(["Microsoft.MachineLearningServices.RunCompleted",
                     "Microsoft.MachineLearningServices.RunStatusChanged"]),
    st.text(min_size=1, max_size=30),
    st.sampled_from(["Completed", "failed", "Canceled", "Running", "?"]) | st.text(max_size=8),
    st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=3),
)  # fmt: skip
junk = st.dictionaries(st.text(max_size=5), st.text())
batches = st.lists(run_events | junk, min_size=1, max_size=5)
deliveries = bodies | batches.map(lambda v: json.dumps(v).encode())


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    with Azurite(Path(tmp_path_factory.mktemp("fuzz"))) as azurite:
        closed = f"http://127.0.0.1:{free_port()}"
        settings = Settings(
            azureml_subscription_id="00000000-0000-0000-0000-000000000000",
            azureml_resource_group="fuzz", azureml_workspace="fuzz", azureml_endpoint=closed,
            ledger_connection_string=azurite.connection_string, ledger_table="fuzz",
            airflow_url=closed, airflow_username="bridge", airflow_password=secrets.token_hex(8),
            signing_key=secrets.token_hex(32),
        )  # fmt: skip
        yield build(settings)


@fuzz(2500)
@given(st.sampled_from(["POST", "POST", "POST", "OPTIONS", "GET", "PUT"]), headers, deliveries)
def test_no_delivery_breaks_the_webhook_or_gets_a_5xx(
    bridge: Bridge, method: str, headers: dict[str, str], body: bytes
) -> None:
    reply = answer(method, headers, body, lambda: bridge)

    assert reply.status in ANSWERS, (reply.status, reply.body)
    if reply.status != 200:
        assert reply.body and reply.body["error"], "a refusal names its reason"
        return
    for result in (reply.body or {}).get("results", []):
        assert result["result"] in {"ignored", "rejected", "handled", "duplicate"}, result
        assert result["detail"], f"{result['result']} without a reason: {result}"
    json.dumps(reply.body)  # and the answer is JSON
