"""The code and the templates agree: function names, triggers, app settings, queue, connection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge import settings
from bridge.events import SECRET_EXPIRED, SECRET_NEAR_EXPIRY

from .templates import Templates, dotted

# Settings the Functions host (not the bridge's code) reads. Each is allowed in Bicep although
# bridge/settings.py does not list it.
HOST_SETTINGS = {
    # Host storage (keys, leases) by identity: account name, token credential, which identity.
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    # Where the host sends telemetry ...
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    # ... and that it authenticates with Entra ID (the component has local auth disabled).
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Read by the code but only on the local stack: set in Azure they would bypass identities.
LOCAL_ONLY_SETTINGS = {
    settings.AZUREML_ENDPOINT, settings.AZUREML_CA_FILE, settings.LEDGER_CONNECTION_STRING,
    settings.KEY_VAULT_CA_FILE,
}  # fmt: skip
SECRET_SETTINGS = {settings.AIRFLOW_PASSWORD}
TRIGGERS_THE_TEMPLATES_WIRE = {
    "serviceBusTrigger", "eventGridTrigger", "httpTrigger", "timerTrigger",
}  # fmt: skip


def trigger(bindings: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [b for b in bindings if b["direction"] == "IN" and b["type"].endswith("Trigger")]
    return found


def test_every_setting_azure_must_have_is_set_in_bicep(templates: Templates) -> None:
    required = {name for name, must_set in settings.SETTINGS.items() if must_set}
    assert required - set(templates.app_settings()) == set()


def test_bicep_sets_no_setting_the_code_does_not_read(templates: Templates) -> None:
    unread = set(templates.app_settings()) - set(settings.SETTINGS) - HOST_SETTINGS
    assert unread == set()


def test_bicep_leaves_local_only_settings_unset(templates: Templates) -> None:
    assert LOCAL_ONLY_SETTINGS & set(templates.app_settings()) == set()


def test_optional_policy_is_set_from_a_parameter(templates: Templates) -> None:
    assert templates.app_settings()[settings.POLICY] == "policyJson"
    policy = templates.module("functionApp")["params"]["policyJson"]
    assert "policyJson" in str(policy)


def branches(value: Any) -> list[Any]:
    """The values a setting may take: both of a conditional's, or the one."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "conditional":
        operands = value["operator"]["operands"]
        return [*branches(operands["true_value"]), *branches(operands["false_value"])]
    return [value]


def test_secrets_are_key_vault_references(templates: Templates) -> None:
    app_settings = templates.app_settings()
    for name in SECRET_SETTINGS:
        for value in branches(app_settings[name]):
            if value == "":  # a mode that has no such secret at all (Entra mode's password)
                continue
            assert value.startswith("@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/"), name
            assert value.endswith("/)"), name


def test_the_signing_key_is_read_from_key_vault_by_the_bridge_not_by_reference(
    templates: Templates,
) -> None:
    """The bridge reads the key's versions itself (every minute) and rotates it: no app setting
    holds the key, or a reference to it that App Service would re-read once a day."""
    app_settings = templates.app_settings()
    assert app_settings[settings.KEY_VAULT_URL] == "keyVaultUri"
    # pragma: allowlist nextline secret (a parameter's name)
    assert app_settings[settings.SIGNING_KEY_SECRET] == "signingKeySecretName"
    assert {settings.SIGNING_KEY, settings.SIGNING_KEY_PREVIOUS} & set(app_settings) == set()


def test_entra_mode_leaves_no_airflow_secret_in_the_settings(templates: Templates) -> None:
    """With airflowAudience set, the bridge signs in with its identity: AUTH is entra, and the
    user and the password are empty; without it, the opposite."""
    app_settings = templates.app_settings()
    by_mode = {
        name: app_settings[name]["operator"]["operands"]
        for name in (settings.AIRFLOW_AUTH, settings.AIRFLOW_USERNAME, settings.AIRFLOW_PASSWORD)
    }
    for operands in by_mode.values():
        assert operands["condition"] == {
            "function": {"type": "empty", "parameters": {"item_to_test": "airflowAudience"}}
        }
    assert by_mode[settings.AIRFLOW_AUTH]["false_value"] == settings.ENTRA
    assert by_mode[settings.AIRFLOW_USERNAME]["false_value"] == ""
    assert by_mode[settings.AIRFLOW_PASSWORD]["false_value"] == ""
    assert by_mode[settings.AIRFLOW_AUTH]["true_value"] == ""
    assert app_settings[settings.AIRFLOW_AUDIENCE] == "airflowAudience"


def test_service_bus_connection_is_identity_based(templates: Templates) -> None:
    app_settings = templates.app_settings()
    prefix = settings.SERVICEBUS_CONNECTION
    assert prefix not in app_settings, "a bare connection setting would be a connection string"
    assert app_settings[f"{prefix}__fullyQualifiedNamespace"] == "serviceBusFullyQualifiedNamespace"
    assert app_settings[f"{prefix}__credential"] == "managedidentity"
    assert app_settings[f"{prefix}__clientId"] == "identityClientId"
    assert app_settings[settings.MANAGED_IDENTITY_CLIENT_ID] == "identityClientId"


def test_function_app_registers_only_triggers_the_templates_wire(
    functions: Mapping[str, list[dict[str, Any]]],
) -> None:
    kinds = {name: trigger(bindings)["type"] for name, bindings in functions.items()}
    assert set(kinds.values()) <= TRIGGERS_THE_TEMPLATES_WIRE, kinds


def test_service_bus_trigger_reads_the_queue_and_connection_bicep_sets(
    functions: Mapping[str, list[dict[str, Any]]],
    templates: Templates,
) -> None:
    queue_triggers = [
        trigger(b) for b in functions.values() if trigger(b)["type"] == "serviceBusTrigger"
    ]
    assert queue_triggers, "function_app.py registers no Service Bus trigger"
    app_settings = templates.app_settings()
    for binding in queue_triggers:
        assert binding["queueName"] == f"%{settings.SUBMISSION_QUEUE}%"
        assert binding["connection"] == settings.SERVICEBUS_CONNECTION
        assert f"{binding['connection']}__fullyQualifiedNamespace" in app_settings


def test_queue_setting_names_the_queue_bicep_creates_and_grants(templates: Templates) -> None:
    assert templates.app_settings()[settings.SUBMISSION_QUEUE] == "submissionQueueName"
    from_main = templates.module("functionApp")["params"]["submissionQueueName"]
    assert dotted(from_main) == "serviceBus.outputs.queueName"
    outputs = templates.parsed["modules/servicebus.bicep"]["outputs"]
    assert dotted(outputs["queueName"]["value"]) == "queue.name"
    assert templates.resource("modules/servicebus.bicep", "queue")["name"] == "queueName"
    assert templates.resource("modules/servicebus.bicep", "functionReceiver")["scope"] == "queue"


def test_event_subscription_delivers_to_the_event_grid_triggered_function(
    functions: Mapping[str, list[dict[str, Any]]],
    templates: Templates,
) -> None:
    subscription_module = templates.module("eventSubscription")
    function_name = templates.value("main.bicep", subscription_module["params"]["functionName"])
    assert function_name in functions, f"function_app.py registers no function {function_name!r}"
    assert trigger(functions[function_name])["type"] == "eventGridTrigger"

    destination = templates.resource("modules/eventgrid-subscription.bicep", "toBridge")[
        "properties"
    ]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "${functionAppId}/functions/${functionName}"


# main.bicep's event subscription modules -> (their file, the subscription's symbol there)
EVENT_SUBSCRIPTIONS = {
    "eventSubscription": ("modules/eventgrid-subscription.bicep", "toBridge"),
    "modelSubscription": ("modules/eventgrid-model-subscription.bicep", "modelsToBridge"),
    "resourceSubscription": ("modules/eventgrid-resource-subscription.bicep", "endpointWrites"),
    "keyRotation": ("modules/keyvault-rotation.bicep", "toBridge"),
}


def test_every_event_subscription_delivers_to_its_event_grid_triggered_function(
    functions: Mapping[str, list[dict[str, Any]]],
    templates: Templates,
) -> None:
    """Job events, models registered and endpoint writes all reach `on_azureml_event`, the
    function that parses every kind (bridge/events.py); Key Vault's notices about the signing key
    reach `on_key_vault_event`; all made in the same second pass."""
    event_functions = {n for n, b in functions.items() if trigger(b)["type"] == "eventGridTrigger"}
    for module, (file, symbol) in EVENT_SUBSCRIPTIONS.items():
        assert templates.module_file(module) == file
        params = templates.module(module)["params"]
        function = templates.value("main.bicep", params["functionName"])
        assert function in event_functions, module
        expected = "on_key_vault_event" if module == "keyRotation" else "on_azureml_event"
        assert function == expected, module
        assert dotted(params["functionAppId"]) == "functionApp.outputs.id", module
        condition = templates.parsed["main.bicep"]["modules"][module]["config"]["condition"]
        assert condition == "deployEventSubscription", module
        destination = templates.resource(file, symbol)["properties"]["destination"]
        assert destination["endpointType"] == "AzureFunction"
        target = destination["properties"]
        assert target["resourceId"] == "${functionAppId}/functions/${functionName}"
        assert target["maxEventsPerBatch"] == 1


def test_every_event_grid_trigger_has_a_subscription(
    functions: Mapping[str, list[dict[str, Any]]],
    templates: Templates,
) -> None:
    event_functions = {n for n, b in functions.items() if trigger(b)["type"] == "eventGridTrigger"}
    subscribed = {
        templates.value("main.bicep", templates.module(module)["params"]["functionName"])
        for module in EVENT_SUBSCRIPTIONS
    }
    assert event_functions == subscribed


def test_reconcile_timer_reads_its_schedule_from_the_setting_bicep_sets(
    functions: Mapping[str, list[dict[str, Any]]],
    templates: Templates,
) -> None:
    timers = {n: trigger(b) for n, b in functions.items() if trigger(b)["type"] == "timerTrigger"}
    assert set(timers) == {"reconcile", "retain"}, "function_app.py registers no reconcile timer"
    assert timers["reconcile"]["schedule"] == f"%{settings.RECONCILE_SCHEDULE}%"
    app_settings = templates.app_settings()
    assert app_settings[settings.RECONCILE_SCHEDULE] == "reconcileSchedule"
    after = app_settings[settings.RECONCILE_AFTER_SECONDS]
    assert after["function"]["parameters"]["value_to_convert"] == "reconcileAfterSeconds"


def test_default_reconcile_settings_in_bicep_match_the_code(templates: Templates) -> None:
    from bridge.ncrontab import Schedule

    main = templates.parsed["main.bicep"]["parameters"]
    schedule = main["reconcileSchedule"]["default"]
    assert schedule == settings.DEFAULT_RECONCILE_SCHEDULE
    Schedule.parse(schedule)
    after = float(main["reconcileAfterSeconds"]["default"])
    assert after == settings.DEFAULT_RECONCILE_AFTER_SECONDS


def test_the_function_timeout_the_lease_derives_from_is_host_jsons(templates: Templates) -> None:
    import json
    from pathlib import Path

    host = json.loads((Path(__file__).parents[2] / "host.json").read_text())
    app_settings = templates.app_settings()
    assert app_settings[settings.FUNCTION_TIMEOUT] == host["functionTimeout"]
    assert host["functionTimeout"] == settings.DEFAULT_FUNCTION_TIMEOUT


def test_key_vaults_notices_about_the_signing_key_alone_reach_the_rotation(
    templates: Templates,
) -> None:
    """The vault's system topic; near expiry and expired, of the one secret the bridge reads
    (Bicep names it as the bridge defaults it)."""
    file = "modules/keyvault-rotation.bicep"
    assert templates.resource(file, "topic")["properties"]["topicType"] == (
        "Microsoft.KeyVault.vaults"
    )
    event_filter = templates.resource(file, "toBridge")["properties"]["filter"]
    assert set(event_filter["includedEventTypes"]) == {SECRET_NEAR_EXPIRY, SECRET_EXPIRED}
    assert event_filter["advancedFilters"] == [
        {"operatorType": "StringIn", "key": "subject", "values": ["secretName"]}
    ]
    params = templates.module("keyRotation")["params"]
    assert templates.value("main.bicep", params["secretName"]) == (
        settings.DEFAULT_SIGNING_KEY_SECRET
    )
