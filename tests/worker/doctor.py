"""`make lint`'s run of azure-functions-doctor (all 41 rules) over the project, from .venv-worker.

Every finding is either fixed or accepted below with its reason; an accepted false positive also
names what makes it false, checked on every run, so an acceptance dies with its reason. Any other
warning or failure fails `make lint`. (The doctor's own switch, `[tool.azure-functions-doctor]
ignore` in pyproject.toml, would hide a rule with no reason and no check.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCTOR = Path(sys.executable).with_name("azure-functions-doctor")


def infra(name: str) -> str:
    return (REPO / "infra" / "modules" / name).read_text()


def linux_fx_only_in_type_schemas() -> bool:
    """Whether every Bicep or JSON file of the checkout naming linuxFxVersion is a vendored type
    schema (tests/fixtures/bicep-types), never a template."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.bicep", "*.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    naming = [path for path in listed if "linuxFxVersion" in (REPO / path).read_text()]
    return all(path.startswith("tests/fixtures/bicep-types/") for path in naming)


# rule id -> (why it is accepted, what must hold for that reason to be true)
ACCEPTED: dict[str, tuple[str, Callable[[], bool]]] = {
    "check_binding_connection_resolution": (
        "false positive: BRIDGE_SERVICEBUS is an identity-based connection; functionapp.bicep sets "
        "BRIDGE_SERVICEBUS__fullyQualifiedNamespace, __credential and __clientId, but the doctor "
        "reads Bicep app settings by a regex that misses one-line `{ name: ..., value: ... }`",
        lambda: (
            "{ name: 'BRIDGE_SERVICEBUS__fullyQualifiedNamespace', value:"
            in infra("functionapp.bicep")
        ),
    ),
    "check_app_insights": (
        "false positive, the same regex: functionapp.bicep sets "
        "APPLICATIONINSIGHTS_CONNECTION_STRING (and the Entra ID authentication string)",
        lambda: (
            "{ name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value:" in infra("functionapp.bicep")
        ),
    ),
    "check_flex_runtime_config": (
        "false positive: the linuxFxVersion it finds is a property in Azure's resource type "
        "schemas vendored under tests/fixtures/bicep-types; no template declares it, and Flex's "
        "runtime is functionAppConfig.runtime (python 3.11)",
        lambda: (
            linux_fx_only_in_type_schemas()
            and "runtime: { name: 'python', version: '3.11' }" in infra("functionapp.bicep")
        ),
    ),
    "check_host_json_log_level_conflict": (
        "deliberate: default Warning keeps the host's own categories quiet; Function=Information "
        "keeps the functions' logs (the bridge's decisions) and Host.Results=Information the "
        "per-invocation results Application Insights counts requests and failures from",
        lambda: (
            json.loads((REPO / "host.json").read_text())["logging"]["logLevel"]
            == {"default": "Warning", "Function": "Information", "Host.Results": "Information"}
        ),
    ),
    "check_local_settings": (
        "local.settings.json serves `func start`; this project runs its functions locally with "
        "`bridge dev` (the local stack) instead, and git ignores the file",
        lambda: "local.settings.json" in (REPO / ".gitignore").read_text().split(),
    ),
    "check_func_cli": (
        "Core Tools download the .NET host, which no machine of this project can fetch; "
        "tests/worker runs the Python worker instead",
        lambda: True,
    ),
    "check_func_core_tools_version": ("the same: no Core Tools here", lambda: True),
    "check_venv": (
        "it wants an activated virtualenv (VIRTUAL_ENV); make runs each venv's tools by path",
        lambda: True,
    ),
}


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "doctor.json"
        # Flex declares its Python in functionAppConfig.runtime, which the doctor does not read
        # from Bicep (only linuxFxVersion): the plan and version are given as Bicep sets them.
        subprocess.run(
            [
                str(DOCTOR),
                "doctor",
                "--path",
                str(REPO),
                "--profile",
                "full",
                "--hosting-plan",
                "flex-consumption",
                "--target-python",
                "3.11",
                "--format",
                "json",
                "--output",
                str(report),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        found = json.loads(report.read_text())
    items = [item for section in found["results"] for item in section["items"]]
    problems = []
    for item in items:
        rule, status = item["rule_id"], item["status"]
        if status in ("pass", "skip"):
            if rule in ACCEPTED:
                print(f"doctor: {rule} no longer raised: its acceptance may go")
            continue
        detail = " ".join(item["value"].split())
        if rule not in ACCEPTED:
            problems.append(f"doctor: {status}: {rule}: {detail}")
        elif not ACCEPTED[rule][1]():
            problems.append(f"doctor: {rule} was accepted because {ACCEPTED[rule][0]}; no more")
        else:
            print(f"doctor: accepted {rule}: {ACCEPTED[rule][0]}")
    counts = {s: sum(i["status"] == s for i in items) for s in ("pass", "skip", "warn", "fail")}
    print(
        f"doctor {found['metadata']['tool_version']}: {len(items)} rules, {counts}, "
        f"{len(problems)} not accepted"
    )
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
