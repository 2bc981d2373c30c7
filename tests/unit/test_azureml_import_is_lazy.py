"""`azure.ai.ml` costs over a second to import: the adapter must only import it on first use."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_azureml_adapter_does_not_import_azure_ai_ml() -> None:
    probe = (
        "import sys, bridge.adapters.azureml, bridge.local.azureml, bridge.local.credential\n"
        "print(sorted(name for name in sys.modules if name.startswith('azure.ai.ml')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
