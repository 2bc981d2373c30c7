from __future__ import annotations

from typing import Any

import pytest

from bridge.contracts import SCHEMA_ID


@pytest.fixture
def submission_dict() -> dict[str, Any]:
    """A valid v1 submission as a DAG task would send it."""
    return {
        "schema": SCHEMA_ID,
        "origin": {
            "dag_id": "Train-Model",
            "run_id": "manual__2026-11-25T10:00:00+00:00",
            "task_id": "submit",
            "map_index": -1,
        },
        "job": {
            "kind": "command",
            "command": "python train.py --lr ${{inputs.lr}}",
            "environment": "azureml:sklearn:3",
            "compute": "cpu-cluster",
            "inputs": {"lr": 0.01},
            "experiment_name": "churn",
        },
        "on": {
            "completed": ["azureml://bridge-demo/train/completed"],
            "failed": ["azureml://bridge-demo/train/failed"],
        },
        "trigger": {"completed": [{"dag_id": "evaluate", "conf": {"threshold": 0.9}}]},
    }
