"""The Function App's access to an Azure ML registry (share_model, deploy of a registry's model):
optional, granted only on the one registry named, with the built-in AzureML Registry User role."""

from __future__ import annotations

import json

from .templates import INFRA, ROLES, Templates, dotted

# The built-in role's id as Microsoft's built-in roles reference publishes it
# (articles/role-based-access-control/built-in-roles/ai-machine-learning.md, "AzureML Registry
# User"; the commits read are cited in docs/deploy.md). A role id never changes: a different value
# in roles.json is a typo that would grant some other role.
AZUREML_REGISTRY_USER = "1823dd4f-9b8c-4ab6-ab4e-7397a3684615"
MODULE = "modules/registry-access.bicep"


def test_roles_json_holds_the_published_id_of_azureml_registry_user() -> None:
    assert ROLES["AzureML Registry User"] == AZUREML_REGISTRY_USER


def test_the_registry_role_is_granted_only_by_the_registry_module_on_the_registry(
    templates: Templates,
) -> None:
    grants = [a for a in templates.role_assignments() if a.role == "AzureML Registry User"]
    assert [(a.file, a.symbol, a.principal) for a in grants] == [
        (MODULE, "registryUser", "functionPrincipalId"),
    ]
    assignment = templates.resource(MODULE, "registryUser")
    assert assignment["scope"] == "registry"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    guid = assignment["name"]["function"]["parameters"]
    assert dotted(guid["base_string"]) == "registry.id"
    assert guid["extra_string_1"] == "functionPrincipalId"
    # The scope is the existing registry named by the parameter, not its resource group.
    raw = templates.parsed[MODULE]["resources"]["registry"]
    assert (raw["type"], raw["existing"]) == ("Microsoft.MachineLearningServices/registries", True)
    assert templates.resource(MODULE, "registry")["name"] == "registryName"


def test_the_registry_module_is_deployed_only_when_a_registry_is_named(
    templates: Templates,
) -> None:
    declared = templates.parsed["main.bicep"]["parameters"]
    assert declared["modelRegistryName"]["default"] == ""
    assert declared["modelRegistryResourceGroup"]["default"] == ""
    module = templates.parsed["main.bicep"]["modules"]["registryAccess"]
    assert templates.module_file("registryAccess") == MODULE
    condition = module["config"]["condition"]["operator"]
    assert condition["type"] == "not"
    empty = condition["operands"]["bool_value"]["function"]
    assert (empty["type"], empty["parameters"]["item_to_test"]) == ("empty", "modelRegistryName")
    params = templates.module("registryAccess")["params"]
    assert params["registryName"] == "modelRegistryName"
    assert dotted(params["functionPrincipalId"]) == "identity.outputs.principalId"


def test_the_registry_module_runs_in_the_registrys_group_defaulting_to_the_workspaces(
    templates: Templates,
) -> None:
    scope = templates.module("registryAccess")["scope"]["function"]
    assert scope["type"] == "resource_group"
    assert scope["parameters"] == {
        "resource_group_name": "registryResourceGroup", "subscription_id": None,
    }  # fmt: skip
    chosen = templates.value("main.bicep", "registryResourceGroup")["operator"]
    assert chosen["type"] == "conditional"
    operands = chosen["operands"]
    assert operands["condition"]["function"]["parameters"]["item_to_test"] == (
        "modelRegistryResourceGroup"
    )
    assert (operands["true_value"], operands["false_value"]) == (
        "workspaceResourceGroup", "modelRegistryResourceGroup",
    )  # fmt: skip


def test_the_function_app_starts_after_its_registry_role_is_in_place(
    templates: Templates,
) -> None:
    assert templates.module("functionApp")["dependsOn"] == ["workspaceAccess", "registryAccess"]


def test_azd_sets_the_registry_from_optional_environment_variables() -> None:
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["modelRegistryName"] == {"value": "${AZUREML_MODEL_REGISTRY_NAME=}"}
    assert given["modelRegistryResourceGroup"] == {
        "value": "${AZUREML_MODEL_REGISTRY_RESOURCE_GROUP=}",
    }  # fmt: skip
