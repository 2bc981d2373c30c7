"""Reading the Bicep templates as pycep parses them, and running the tools of `.venv-infra`.

pycep-parser and checkov pin dependencies that clash with the bridge's (checkov downgrades
`packaging` and `python-dateutil`), so they live in their own virtual environment, `.venv-infra`,
and are called as subprocesses.

pycep renders an identifier (a parameter, variable or resource symbol) as a bare string, a
conditional resource or module as {"condition", "config"}, and `a.b.c` as nested
property accessors; `Templates` hides those shapes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_VENV_BIN = REPO / ".venv-infra" / "bin"
INFRA_TOOLS_INSTALL = (
    "python3.11 -m venv .venv-infra && "
    ".venv-infra/bin/pip install pycep-parser==0.5.1 checkov==3.3.30"
)
ROLES: Mapping[str, str] = json.loads((INFRA / "roles.json").read_text())

# Runs inside .venv-infra: parses every file named on stdin, prints {path: template or error}.
_PARSE_ALL = """
import json, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
parsed = {}
for name in sys.stdin.read().split():
    try:
        parsed[name] = {"template": parser.parse(file_path=Path(name))}
    except Exception as exc:
        parsed[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(parsed, default=str))
"""


def infra_tool(name: str) -> Path:
    """A tool in .venv-infra; fails (never skips) with the install line when it is absent."""
    tool = INFRA_VENV_BIN / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing; install the infrastructure tools: {INFRA_TOOLS_INSTALL}")
    return tool


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_bicep_files() -> dict[str, dict[str, Any]]:
    """Every .bicep file (path relative to infra/) -> {"template": ...} or {"error": ...}."""
    names = "\n".join(str(path.relative_to(REPO)) for path in bicep_files())
    done = subprocess.run(
        [str(infra_tool("python")), "-c", _PARSE_ALL],
        input=names, capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pycep could not run: {done.stderr[-2000:]}")
    parsed: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return {str(Path(name).relative_to("infra")): result for name, result in parsed.items()}


def unwrap(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The body of a resource or module, conditional (`= if (...) {...}`) or not."""
    inner = config.get("config") if "condition" in config else None
    return inner if isinstance(inner, Mapping) else config


def dotted(expression: Any) -> str | None:
    """`a.b.c` for a property-accessor chain, the identifier for a bare string, else None."""
    if isinstance(expression, str):
        return expression
    if isinstance(expression, Mapping) and "operator" in expression:
        operator = expression["operator"]
        if operator["type"] == "property_accessor":
            head = dotted(operator["operands"]["operand_1"])
            tail = dotted(operator["operands"]["operand_2"])
            if head is not None and tail is not None:
                return f"{head}.{tail}"
    return None


def role_named_in(expression: Any) -> str | None:
    """The role name in a `roles['<name>']` lookup anywhere inside an expression."""
    if isinstance(expression, Mapping):
        operator = expression.get("operator")
        if isinstance(operator, Mapping) and operator.get("type") == "index_accessor":
            operands = operator["operands"]
            if operands["operand_1"] == "roles" and isinstance(operands["operand_2"], str):
                return operands["operand_2"]
        for value in expression.values():
            found = role_named_in(value)
            if found:
                return found
    return None


@dataclass(frozen=True)
class RoleAssignment:
    file: str
    symbol: str
    role: str | None
    principal: str | None


@dataclass(frozen=True)
class Templates:
    """The parsed templates, keyed by path relative to infra/ ("main.bicep", "modules/x.bicep")."""

    parsed: Mapping[str, Mapping[str, Any]]

    def resource(self, file: str, symbol: str) -> Mapping[str, Any]:
        return unwrap(self.parsed[file]["resources"][symbol]["config"])

    def module(self, symbol: str) -> Mapping[str, Any]:
        """A module declared in main.bicep: its body (name, scope, params)."""
        return unwrap(self.parsed["main.bicep"]["modules"][symbol]["config"])

    def module_file(self, symbol: str) -> str:
        path: str = self.parsed["main.bicep"]["modules"][symbol]["detail"]["path"]
        return path

    def value(self, file: str, expression: Any) -> Any:
        """An expression with a bare variable reference replaced by the variable's value."""
        variables = self.parsed[file].get("variables", {})
        if isinstance(expression, str) and expression in variables:
            return variables[expression]["value"]
        return expression

    def role_assignments(self) -> Iterator[RoleAssignment]:
        for file, template in self.parsed.items():
            for symbol, resource in template.get("resources", {}).items():
                if resource["type"] == "Microsoft.Authorization/roleAssignments":
                    properties = unwrap(resource["config"])["properties"]
                    yield RoleAssignment(
                        file, symbol, role_named_in(properties["roleDefinitionId"]),
                        dotted(properties["principalId"]),
                    )

    def app_settings(self) -> dict[str, Any]:
        """The Function App's app settings: name -> value expression."""
        site = self.resource("modules/functionapp.bicep", "site")
        entries = site["properties"]["siteConfig"]["appSettings"]
        settings = {entry["name"]: entry["value"] for entry in entries}
        assert len(settings) == len(entries), "an app setting is set twice in functionapp.bicep"
        return settings
