"""The templates parse, pass checkov, grant least privilege and carry no secrets."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import yaml

from .templates import INFRA, REPO, ROLES, Templates, bicep_files, dotted, infra_tool

# Built-in roles no identity may be given by these templates.
BROAD_ROLES = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>[^\n]*))?")


def test_every_bicep_file_parses(parsed_bicep: Mapping[str, Mapping[str, Any]]) -> None:
    assert "main.bicep" in parsed_bicep
    broken = {name: result["error"] for name, result in parsed_bicep.items() if "error" in result}
    assert broken == {}


def test_main_uses_every_module_and_only_modules_that_exist(templates: Templates) -> None:
    used = {templates.module_file(symbol) for symbol in templates.parsed["main.bicep"]["modules"]}
    present = {name for name in templates.parsed if name.startswith("modules/")}
    assert used == present


def test_checkov_finds_no_failed_check() -> None:
    done = subprocess.run(
        [str(infra_tool("checkov")), "--directory", str(INFRA), "--output", "json",
         "--skip-download", "--compact"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert done.stdout.strip(), f"checkov printed nothing: {done.stderr[-2000:]}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert any(report.get("check_type") == "bicep" for report in reports), "no Bicep was scanned"
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert done.returncode == 0


def test_every_checkov_skip_is_inline_with_a_reason() -> None:
    skips = [
        (str(path.relative_to(INFRA)), match["check"], (match["reason"] or "").strip())
        for path in bicep_files()
        for match in SKIP_COMMENT.finditer(path.read_text())
    ]
    assert skips, "expected the documented skips (public endpoints without a VNet)"
    without_reason = [f"{file}: {check}" for file, check, reason in skips if len(reason) < 20]
    assert without_reason == []


def test_role_ids_are_written_only_in_roles_json() -> None:
    stray = {
        str(path.relative_to(INFRA)): GUID.findall(path.read_text())
        for path in bicep_files() if GUID.search(path.read_text())
    }
    assert stray == {}
    assert all(GUID.fullmatch(role_id) for role_id in ROLES.values())


def test_no_identity_is_granted_owner_contributor_or_access_admin(templates: Templates) -> None:
    granted_ids = {role_id.lower() for role_id in ROLES.values()}
    assert {name for name in BROAD_ROLES if name in ROLES} == set()
    assert {role_id for role_id in BROAD_ROLES.values() if role_id in granted_ids} == set()
    assert all(assignment.role in ROLES for assignment in templates.role_assignments())


def test_every_role_assignment_says_why(templates: Templates) -> None:
    assignments = list(templates.role_assignments())
    unexplained = [
        f"{a.file}: {a.symbol}" for a in assignments
        if not re.search(rf"// Why:[^\n]*\n(?://[^\n]*\n)*resource {a.symbol} ",
                         (INFRA / a.file).read_text())
    ]
    assert assignments
    assert unexplained == []


def test_runtime_identities_get_exactly_the_roles_they_need(templates: Templates) -> None:
    def roles_of(principal: str) -> set[str | None]:
        return {a.role for a in templates.role_assignments() if a.principal == principal}

    assert roles_of("functionPrincipalId") == {
        "AzureML Data Scientist", "AzureML Registry User", "Azure Service Bus Data Receiver",
        "Storage Table Data Contributor", "Storage Blob Data Owner",
        "Key Vault Secrets User", "Key Vault Secrets Officer", "Monitoring Metrics Publisher",
    }
    # Officer (writing versions) on the signing key's secret alone, to rotate it.
    rotator = templates.resource("modules/keyvault-rotation.bicep", "rotator")
    assert rotator["scope"] == "secret"
    assert roles_of("airflowWorkerPrincipalId") == {"Azure Service Bus Data Sender"}
    assert roles_of("deadLetterWriterPrincipalId") == {"Storage Blob Data Contributor"}


def test_queue_roles_are_scoped_to_the_queue_not_the_namespace(templates: Templates) -> None:
    for symbol in ("functionReceiver", "airflowSender"):
        assert templates.resource("modules/servicebus.bicep", symbol)["scope"] == "queue"
    ledger = templates.resource("modules/ledger-storage.bicep", "ledgerWriter")
    assert ledger["scope"] == "ledger"


def test_resource_writes_come_from_the_workspace_groups_system_topic(templates: Templates) -> None:
    """ARM raises resource write events on the resource group's system topic: one per group,
    global, its source the group the module is deployed to (the workspace's)."""
    topic = templates.resource("modules/eventgrid-resource-group-topic.bicep", "topic")
    assert topic["properties"]["topicType"] == "Microsoft.Resources.ResourceGroups"
    source = topic["properties"]["source"]["function"]
    assert (source["type"], source["property_name"]) == ("resource_group", "id")
    assert source["parameters"] == {"resource_group_name": None, "subscription_id": None}
    assert topic["location"] == "global"
    assert topic["identity"] == {"type": "SystemAssigned"}
    module = templates.module("groupTopic")
    scope = module["scope"]["function"]["parameters"]["resource_group_name"]
    assert scope == "workspaceResourceGroup"
    subscription = templates.module("resourceSubscription")["params"]
    assert dotted(subscription["topicName"]) == "groupTopic.outputs.name"


def test_the_groups_topic_may_dead_letter_into_the_container_and_nowhere_else(
    templates: Templates,
) -> None:
    writer = templates.module("groupTopicDeadLetters")["params"]
    assert dotted(writer["deadLetterWriterPrincipalId"]) == "groupTopic.outputs.principalId"
    assert dotted(writer["storageAccountName"]) == "ledgerStorage.outputs.name"
    assert dotted(writer["deadLetterContainerName"]) == (
        "ledgerStorage.outputs.deadLetterContainerName"
    )
    role = templates.resource("modules/eventgrid-deadletter-writer.bicep", "deadLetterWriter")
    assert role["scope"] == "deadLetters"
    subscription = templates.module("resourceSubscription")["params"]
    assert dotted(subscription["deadLetterContainerName"]) == (
        "ledgerStorage.outputs.deadLetterContainerName"
    )


def test_templates_hold_no_keys_or_connection_strings() -> None:
    forbidden = re.compile(r"listKeys\(|AccountKey=|SharedAccessKey|InstrumentationKey=", re.I)
    found = {
        str(path.relative_to(INFRA)): forbidden.findall(path.read_text())
        for path in bicep_files() if forbidden.search(path.read_text())
    }
    assert found == {}


def test_data_planes_accept_only_entra_id(templates: Templates) -> None:
    def properties(file: str, symbol: str) -> Mapping[str, Any]:
        found: Mapping[str, Any] = templates.resource(file, symbol)["properties"]
        return found

    for file in ("modules/function-storage.bicep", "modules/ledger-storage.bicep"):
        account = properties(file, "account")
        assert (account["allowSharedKeyAccess"], account["allowBlobPublicAccess"]) == (False, False)
        assert account["minimumTlsVersion"] == "TLS1_2"
    assert properties("modules/servicebus.bicep", "namespace")["disableLocalAuth"] is True
    assert properties("modules/monitoring.bicep", "insights")["DisableLocalAuth"] is True
    assert properties("modules/monitoring.bicep", "logs")["features"]["disableLocalAuth"] is True
    vault = properties("modules/keyvault.bicep", "vault")
    assert (vault["enableRbacAuthorization"], vault["enablePurgeProtection"]) == (True, True)


def test_submission_queue_detects_duplicates_and_dead_letters_expired_messages(
    templates: Templates,
) -> None:
    queue = templates.resource("modules/servicebus.bicep", "queue")["properties"]
    assert queue["requiresDuplicateDetection"] is True
    assert queue["duplicateDetectionHistoryTimeWindow"].startswith("PT")
    assert queue["deadLetteringOnMessageExpiration"] is True
    assert 1 < queue["maxDeliveryCount"] <= 20
    assert queue["lockDuration"].startswith("PT")
    namespace = templates.resource("modules/servicebus.bicep", "namespace")
    assert namespace["sku"]["name"] in {"Standard", "Premium"}


def test_function_app_runs_python_311_on_flex_consumption_by_identity(templates: Templates) -> None:
    plan = templates.resource("modules/functionapp.bicep", "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = templates.resource("modules/functionapp.bicep", "site")
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    deployment = config["deployment"]["storage"]["authentication"]
    assert deployment["type"] == "UserAssignedIdentity"
    assert deployment["userAssignedIdentityResourceId"] == "identityId"
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"


def test_parameters_file_sets_every_required_parameter_and_no_unknown_one(
    templates: Templates,
) -> None:
    declared = templates.parsed["main.bicep"]["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) - set(declared) == set()
    required = {name for name, param in declared.items() if "default" not in param}
    assert required - set(given) == set()


def test_azd_project_points_at_infra_and_the_function_app(templates: Templates) -> None:
    project = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert (REPO / project["infra"]["path"] / f"{project['infra']['module']}.bicep").is_file()
    [(service_name, service)] = project["services"].items()
    assert (service["language"], service["host"], service["project"]) == ("python", "function", ".")
    tags = templates.resource("modules/functionapp.bicep", "site")["tags"]["function"]["parameters"]
    assert tags["arg_2"] == {"'azd-service-name'": service_name}


def test_airflow_outside_azure_federates_into_an_identity_that_may_only_send(
    templates: Templates,
) -> None:
    """Workload identity federation: one federated credential per issuer/subject pair given, with
    the token-exchange audience, written one at a time (Entra ID refuses concurrent writes on one
    identity); that identity, and nothing else, gets the sender role on the queue."""
    raw = templates.parsed["modules/airflow-identity.bicep"]["resources"]["federated"]
    assert {"type": "batchSize", "argument": 1} in raw["decorators"]
    assert raw["config"]["loop_type"]["detail"]["array_name"] == "federatedCredentials"
    properties = raw["config"]["config"]["properties"]
    assert properties["audiences"] == ["api://AzureADTokenExchange"]
    assert {dotted(properties["issuer"]), dotted(properties["subject"])} == {
        "credential.issuer", "credential.subject",
    }  # fmt: skip
    module = templates.parsed["main.bicep"]["modules"]["airflowIdentity"]
    assert module["detail"]["path"] == "modules/airflow-identity.bicep"
    assert templates.module("serviceBus")["params"]["airflowWorkerPrincipalId"] == (
        "airflowSenderPrincipalId"
    )
