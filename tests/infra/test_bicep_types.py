"""infra/ against Azure's resource types (the vendored bicep-types-az data): no unknown property,
no read-only property written, no enum value outside its closed set, no required property left out.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from .bicep_types import (
    INFRA,
    TYPES_ROOT,
    Finding,
    check_directory,
    check_source,
    declared_types,
    vendored_types,
)


def test_infra_matches_azure_resource_types() -> None:
    findings = [str(finding) for finding in check_directory(INFRA)]
    assert findings == []


def test_every_declared_type_is_vendored_and_sources_name_each_file_and_the_commit() -> None:
    sources = (TYPES_ROOT / "SOURCES").read_text()
    assert "repository: https://github.com/Azure/bicep-types-az" in sources
    assert re.search(r"^commit: [0-9a-f]{40}$", sources, re.MULTILINE)
    listed = set(re.findall(r"^(generated/\S+/types\.json)$", sources, re.MULTILINE))
    present = {str(path.relative_to(TYPES_ROOT)) for path in TYPES_ROOT.rglob("types.json")}
    assert listed == present
    index = vendored_types()
    declared = declared_types(INFRA)
    assert declared, "no resource declaration found in infra/"
    found = {full: index.get(*full.split("@", 1)) for full in declared}
    assert sorted(full for full, resource in found.items() if resource is None) == []
    # Only what infra/ uses is vendored: each file supplies at least one declared type.
    assert {resource.source for resource in found.values() if resource is not None} == present


@dataclass(frozen=True)
class Plant:
    """A typo planted in a copy of infra/, and what the check must say about it, where."""

    file: str
    old: str
    new: str
    says: str
    anchor: str = ""  # the text on the line the finding is reported at (default: new)


PLANTS = [
    Plant("modules/servicebus.bicep", "requiresSession: false", "requireSession: false",
          "properties.requireSession: not a property of this type"),
    Plant("modules/servicebus.bicep", "maxDeliveryCount: 10", "maxDeliveryCount: '10'",
          "properties.maxDeliveryCount: a literal string where the type wants int"),
    Plant("modules/servicebus.bicep", "sku: { name: 'Standard'", "sku: { name: 'standard'",
          "sku.name: 'standard' is not one of the allowed values (did you mean 'Standard'?)"),
    # A discriminator (endpointType picks the destination's shape) and an enum inside an array.
    Plant("modules/eventgrid-subscription.bicep", "endpointType: 'AzureFunction'",
          "endpointType: 'Azurefunction'",
          "properties.destination.endpointType: 'Azurefunction' is not one of the allowed values "
          "(did you mean 'AzureFunction'?)"),
    Plant("modules/eventgrid-subscription.bicep", "operatorType: 'StringNotIn'",
          "operatorType: 'StringNotin'",
          "properties.filter.advancedFilters[0].operatorType: 'StringNotin' is not one of"),
    Plant("modules/ledger-storage.bicep", "properties: { publicAccess: 'None' }",
          "properties: { publicAccess: 'none' }",
          "properties.publicAccess: 'none' is not one of the allowed values"),
    Plant("modules/functionapp.bicep", "    httpsOnly: true\n",
          "    httpsOnly: true\n    defaultHostName: 'bridge.example.com'\n",
          "properties.defaultHostName: read-only, cannot be written",
          anchor="defaultHostName: 'bridge.example.com'"),
    Plant("modules/functionapp.bicep", "instanceMemoryMB: instanceMemoryMB",
          "instanceMemoryMb: instanceMemoryMB",
          "properties.functionAppConfig.scaleAndConcurrency.instanceMemoryMb: the type spells it "
          "'instanceMemoryMB'"),
    Plant("modules/workspace-access.bicep", "    principalId: functionPrincipalId\n", "",
          "properties.principalId: required, missing", anchor="  properties: {"),
    Plant("modules/eventgrid-topic.bicep", "existing = {\n  name: workspaceName\n",
          "existing = {\n  name: workspaceName\n  location: 'westeurope'\n",
          "location: an existing resource writes nothing", anchor="location: 'westeurope'"),
    Plant("modules/keyvault.bicep", "'Microsoft.KeyVault/vaults@2023-07-01'",
          "'Microsoft.KeyVault/vaults@2023-07-02'",
          "resource vault: no type Microsoft.KeyVault/vaults@2023-07-02 in the vendored types"),
]


def test_planted_typos_are_each_reported_with_file_and_line(tmp_path: Path) -> None:
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra)
    for plant in PLANTS:
        path = infra / plant.file
        text = path.read_text()
        assert text.count(plant.old) == 1, f"{plant.file}: {plant.old!r} is not there once"
        path.write_text(text.replace(plant.old, plant.new))
    expected: list[tuple[str, int, str]] = []
    for plant in PLANTS:
        lines = (infra / plant.file).read_text().splitlines()
        anchor = plant.anchor or plant.new.strip().splitlines()[0]
        at = [number for number, line in enumerate(lines, 1) if anchor.strip() in line]
        assert len(at) == 1, f"{plant.file}: anchor {anchor!r} is not on exactly one line"
        expected.append((plant.file, at[0], plant.says))

    findings = check_directory(infra)

    unreported = [
        f"{file}:{line}: ...{says}"
        for file, line, says in expected
        if not any(f.file == file and f.line == line and says in f.message for f in findings)
    ]
    assert unreported == [], "\n".join(map(str, findings))
    # Nothing else: each plant is reported once, and the untouched templates stay clean.
    assert len(findings) == len(PLANTS), "\n".join(map(str, findings))


# The constructs the check walks through, on a template of its own.
CONSTRUCTS = """\
targetScope = 'resourceGroup'
param names array
param flag bool
param suffix string

// Conditional, with a nested child that inherits the api-version.
resource ns 'Microsoft.ServiceBus/namespaces@2024-01-01' = if (flag) {
  name: 'sb-${suffix}'
  location: 'westeurope'
  sku: { name: 'Standard' }
  resource queue 'queues' = {
    name: 'q'
    properties: { requireSession: true }
  }
  @batchSize(1)
  resource looped 'queues@2024-01-01' = [for (n, i) in names: if (flag) {
    name: n
    properties: { lockDuration: n, maxDeliveryCount: flag ? 1 : 2, status: 'active' }
  }]
}

resource other 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: 'other'
  resource known 'queues' existing = {
    name: 'q2'
  }
}

resource misplaced 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: other
  name: 'default'
}

resource viaParent 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for n in names: {
  parent: other
  name: n
  properties: {
    enableBatchedOperation: true
    '${suffix}': true
  }
}]

resource noName 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: other
  properties: {}
}
"""


def test_constructs_loops_conditions_nesting_parent_and_existing() -> None:
    findings = check_source("constructs.bicep", CONSTRUCTS.encode(), vendored_types())
    lines = CONSTRUCTS.splitlines()

    def line_of(text: str) -> int:
        return next(number for number, line in enumerate(lines, 1) if text in line)

    got = {(finding.line, finding.message) for finding in findings}
    queue = "(Microsoft.ServiceBus/namespaces/queues@2024-01-01)"
    assert got == {
        (line_of("requireSession"),
         f"resource queue {queue}: properties.requireSession: not a property of this type"),
        (line_of("status: 'active'"),
         f"resource looped {queue}: properties.status: 'active' is not one of the allowed values "
         "(did you mean 'Active'?): 'Active', 'Disabled', 'Restoring', 'SendDisabled', "
         "'ReceiveDisabled', 'Creating', 'Deleting', 'Renaming', 'Unknown'"),
        (line_of("parent: other"),
         "resource misplaced (Microsoft.Storage/storageAccounts/tableServices@2023-05-01): "
         "not a child type of its parent other (Microsoft.ServiceBus/namespaces)"),
        (line_of("enableBatchedOperation"),
         f"resource viaParent {queue}: properties.enableBatchedOperation: not a property of this "
         "type"),
        (line_of("resource noName"), f"resource noName {queue}: name: required, missing"),
    }


def test_a_file_tree_sitter_cannot_parse_is_a_finding() -> None:
    findings = check_source("broken.bicep", b"resource x 'A/b@1' = {\n  name: \n", vendored_types())
    assert findings and all(f.message == "does not parse" for f in findings)
    assert isinstance(findings[0], Finding)


@pytest.mark.parametrize("value", ["'Standard'", "tier", "flag ? 'Basic' : 'Premium'", "'${tier}'"])
def test_expressions_are_not_judged_beyond_their_key(value: str) -> None:
    source = f"""\
param tier string
param flag bool
resource ns 'Microsoft.ServiceBus/namespaces@2024-01-01' = {{
  name: 'sb'
  location: 'westeurope'
  sku: {{ name: {value} }}
}}
"""
    assert check_source("sku.bicep", source.encode(), vendored_types()) == []
