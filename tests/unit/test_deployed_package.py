"""The package Azure runs is what `.funcignore` leaves: it imports, indexes and builds its bridge
with no file of the local stack (`bridge/local`) and no test, benchmark or example beside it."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ignored(relative: Path, patterns: list[str]) -> bool:
    """`.funcignore`'s rule, as the patterns there use it: a pattern with a slash names a path
    from the root; one without names any file or folder on the way."""
    text = relative.as_posix()
    for pattern in patterns:
        if "/" in pattern:
            if text == pattern or text.startswith(pattern.rstrip("/") + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in relative.parts):
            return True
    return False


def deployed(into: Path) -> list[str]:
    lines = (REPO / ".funcignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # What the checkout holds (new files too), less what git ignores: the tree `func` packs.
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    kept = [path for path in tracked if not ignored(Path(path), patterns)]
    for path in kept:
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, into / path)
    return kept


PROBE = """
import json, sys
# As in Azure, where the app's folder is the package: not this checkout's editable install.
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path = [entry for entry in sys.path if "__editable__" not in entry]
import function_app
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
from bridge.composition import build
from bridge.settings import Settings
bridge = build(Settings(
    azureml_subscription_id="0000", azureml_resource_group="rg", azureml_workspace="ws",
    ledger_endpoint="https://ledger.table.core.windows.net", airflow_url="https://airflow",
    airflow_username="bridge", airflow_password="p" * 8, signing_key="k" * 32))
try:
    import bridge.local
    local = "importable"
except ModuleNotFoundError:
    local = "absent"
import bridge as package
print(json.dumps({"functions": names, "local": local, "from": package.__file__,
                  "ledger": type(bridge.ledger).__name__,
                  "loaded": sorted(m for m in sys.modules if m.startswith("bridge.local"))}))
"""


def test_the_deployed_package_imports_indexes_and_builds_without_the_local_stack(
    tmp_path: Path,
) -> None:
    kept = deployed(tmp_path)
    assert "function_app.py" in kept and "host.json" in kept and "requirements.txt" in kept
    assert not [path for path in kept if path.startswith(("bridge/local/", "tests/", "bench/"))]

    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True,
                          text=True, check=False)  # fmt: skip

    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["from"].startswith(str(tmp_path))  # the copy, not the checkout
    assert found["local"] == "absent" and found["loaded"] == []
    assert found["functions"] == [
        "events_webhook", "health", "on_azureml_event", "on_key_vault_event", "on_submission",
        "reconcile", "retain",
    ]  # fmt: skip
    assert found["ledger"] == "TableLedger"
