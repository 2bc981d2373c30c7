"""Screenshots of the Airflow 3 UI for the docs, taken with headless Chromium (Debian's `chromium`).

    .venv/bin/python -m bridge.local.screenshot [--out docs/images]

Starts the local stack, runs the example producer DAG once, and photographs its submit task's
page, where the "Azure ML Studio" button is. The UI is served without a login for this run only
(the simple auth manager's all-admins switch): Chromium's command line cannot sign in. Not part
of `make test`: the image is committed, and this is how to make it again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bridge.local.stack import REPO, StackOptions, running_stack

PRODUCER, TASK = "azureml_train", "submit_training"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium: install Debian's package (apt-get install chromium)")


def photograph(url: str, out: Path, *, width: int = 1440, height: int = 900) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--virtual-time-budget=20000", f"--screenshot={out}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)
    options = StackOptions(
        workdir=REPO / ".stack" / "screenshot",
        extra_airflow_env={"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"},
    )
    with running_stack(options) as stack:
        airflow = stack.airflow
        assert airflow is not None
        airflow.wait_for_dags([PRODUCER], timeout=90)
        run_id = airflow.trigger(PRODUCER)
        if airflow.wait_for_run(PRODUCER, run_id, timeout=60) != "success":
            print(f"{PRODUCER} did not succeed", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        page = f"{airflow.base_url}/dags/{PRODUCER}/runs/{run_id}/tasks/{TASK}/details"
        target = args.out / "airflow-studio-link.png"
        photograph(page, target)
        print(f"{page}\n  -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
