"""`make demo LIFECYCLE=1` for real: the whole stack with a production workspace and its own
bridge, the example `azureml_train_to_prod` followed from training to production, under the
documented Azure ML (ARM events when a write ends) and the observed one (ARM events as a write
starts, none at its end: the sweep finds every deployment). Each run starts a stack of its own,
about 100 s."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.local import lifecycle_demo
from bridge.local.stack import StackOptions

pytestmark = pytest.mark.integration

SHARED = "azureml://registries/bridge-demo-registry/models/bridge-demo-model/versions/1"


def demo(profile: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    options = lifecycle_demo.options(StackOptions(workdir=workdir, azure_profile=profile))
    code = lifecycle_demo.run(options)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def deployed(out: str, step: str) -> str:
    """How the bridge found that the step's deployment or traffic change ended."""
    found = re.search(rf"asset event {step}/completed: Succeeded, (via [^\n]*)", out)
    assert found, f"no {step}/completed in the timeline:\n{out}"
    return found.group(1).strip()


def assert_reached_production(out: str) -> None:
    # The training job: RunCompleted in both profiles, though a sweep may read it first.
    assert "asset event train/completed: Completed, via " in out
    assert "asset event register/completed: Registered, via call" in out
    assert "asset event smoke-test/passed (Airflow's own outlet)" in out
    assert "asset event share/completed: Shared, via call" in out
    # The production workspace's bridge took the last deployment, in its own workspace.
    assert any("production bridge on_submission" in line and "accepted deploy" in line
               for line in out.splitlines())  # fmt: skip
    assert "production Azure ML (ARM)" in out and "bridge-demo-prod/deployments/blue" in out
    assert f"azureml_lifecycle_in_production logged: production serves {SHARED}" in out
    assert "DEMO FAILED" not in out


def test_the_lifecycle_demo_reaches_production_on_arm_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = demo("documented", tmp_path, capsys)
    assert code == 0, out
    assert "Azure ML emulator profile: documented" in out
    assert_reached_production(out)
    # ARM's event when a write ends advances the deployment; the sweep (5 s) is only a backstop,
    # which on a slow machine may get to one first.
    deployments = [deployed(out, step) for step in ("stage", "promote", "production")]
    assert "via event (an ARM resource write event)" in deployments, deployments


def test_the_lifecycle_demo_reaches_production_through_the_sweep_when_arm_is_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = demo("observed", tmp_path, capsys)
    assert code == 0, out
    assert "Azure ML emulator profile: observed" in out
    assert_reached_production(out)
    # No event at a write's end: every deployment and traffic change is found by the sweep.
    for step in ("stage", "promote", "production"):
        assert deployed(out, step) == "via reconcile (the reconcile sweep: no event told it)"
    assert "production bridge reconcile" in out
