"""A clean first screen: azure-ai-ml's experimental-class warnings and "Proceeding with no tenant
id" never reach the demo's or the bridge's output. They are silenced at the source (the SDK's own
logger, set once when the adapter builds its client), not filtered from output.

Each case is a fresh process, since azure-ai-ml sets up its logger on import: the production
adapter creates a pipeline job (experimental classes) and reads it back. The control case undoes
the adapter's setting after the client is built, and must show the noise, or this test would
prove nothing.
"""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from bridge.contracts import Submission
from bridge.local.process import child_environment
from bridge.local.stack import Stack
from tests.integration.conftest import PIPELINE_SPEC

pytestmark = pytest.mark.integration

CHILD = """
import logging, os, sys
import bridge.local  # the stack's credential for its Azure ML emulator
from bridge.composition import azureml_jobs
from bridge.contracts import Submission
from bridge.settings import Settings

logging.basicConfig(level=logging.INFO)  # a host that logs INFO, as the Functions worker does
jobs = azureml_jobs(Settings.from_env(os.environ))
jobs._ml_client()
if sys.argv[1] == "undo":
    logging.getLogger("azure.ai.ml").setLevel(logging.INFO)
submission = Submission.parse(os.environ["SUBMISSION"])
print("created", jobs.create(submission, {}).name)
print("found", jobs.find(submission.id).name)
"""
NOISE = ("experimental", "Proceeding with no tenant id")


def run(stack: Stack, mode: str) -> str:
    job = Submission.model_validate(
        {
            "origin": {"dag_id": "quiet", "run_id": secrets.token_hex(6), "task_id": mode},
            "job": {"kind": "yaml", "spec": PIPELINE_SPEC},
        }
    )
    env = child_environment(stack.settings.environment(), {"SUBMISSION": job.to_json()})
    done = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True,
                          text=True, timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"found {job.id}" in done.stdout
    return done.stdout + done.stderr


def test_the_adapter_silences_azure_ai_ml_at_its_logger(loop_stack: Stack) -> None:
    noisy = run(loop_stack, "undo")
    assert any(phrase in noisy for phrase in NOISE), "the SDK made no noise: nothing is proven"
    quiet = run(loop_stack, "production")
    assert not [phrase for phrase in NOISE if phrase in quiet], quiet[-3000:]
