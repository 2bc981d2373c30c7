"""Cold start: what a new Function instance pays before its first piece of work, each as a
ratio to `import azure.ai.ml` measured in the same run.

Each case is a fresh Python process (interpreter start included, as on a cold instance), timed
from spawn to exit, on the settings of the running bench stack:
- `import azure.ai.ml`: the baseline, the heaviest import the bridge has;
- `import function_app`: what the Functions host loads to index the app (must not import it);
- first event handled: import, build, Airflow token, asset lookup, ledger writes, one effect;
- first submission: import, build, `azure.ai.ml` and `MLClient`, one job created.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.overhead import completion, seed, submission
from bench.report import table
from bridge.local.process import child_environment
from bridge.local.stack import Stack
from bridge.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "import azure.ai.ml": "import azure.ai.ml",
    "import function_app": "import function_app",
    "first event handled": (
        "import os, sys, function_app\n"
        "import bridge.local  # the stack's credential for its emulator\n"
        "from bridge.composition import runtime\n"
        "from bridge.webhook import answer\n"
        "reply = answer('POST', {'aeg-event-type': 'Notification'}, os.environb[b'BENCH_BODY'],\n"
        "               runtime)\n"
        "assert reply.body['results'][0]['result'] == 'handled', reply.body\n"
    ),
    "first submission": (
        "import os, function_app\n"
        "import bridge.local  # the stack's credential for its emulator\n"
        "from bridge.composition import runtime\n"
        "report = runtime().submit(os.environb[b'BENCH_BODY'], 'bench-cold')\n"
        "assert report.result.value == 'created', report\n"
    ),
}


def run(stack: Stack, rounds: int, uri: str) -> dict[str, Any]:
    table_name = f"cold{secrets.token_hex(3)}"
    settings = Settings(**{**asdict(stack.settings), "ledger_table": table_name})
    env = child_environment(settings.environment(), {"PYTHONPATH": str(REPO)})
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for round_ in range(rounds + 1):  # the first round warms the page cache, and is dropped
        jobs = seed(settings, table_name, [uri], f"cold{round_}")
        bodies = {
            "first event handled": json.dumps([completion(jobs[0], settings.signing_key)]),
            "first submission": submission(round_, uri, f"cold-submit-{table_name}").to_json(),
        }
        for name, code in CASES.items():
            seconds = _time(code, {**env, "BENCH_BODY": bodies.get(name, "")})
            if round_:
                samples[name].append(seconds)
    base = statistics.median(samples["import azure.ai.ml"])
    rows = {
        name: {
            "median_s": round(statistics.median(values), 3),
            "ratio": round(statistics.median(values) / base, 2),
            "rounds": len(values),
        }
        for name, values in samples.items()
    }
    return {"cases": rows}


def _time(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold start case failed:\n{code}\n{done.stderr[-2000:]}")
    return seconds


def print_table(result: dict[str, Any]) -> None:
    rows = [[name, r["median_s"], r["ratio"], r["rounds"]] for name, r in result["cases"].items()]
    title = "6. Cold start, a fresh process each (median seconds; ratio to import azure.ai.ml)"
    print(table(title, ["case", "seconds", "ratio", "rounds"], rows))
