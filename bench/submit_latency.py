"""How long a DAG task spends submitting a job, against the bare queue send it is built on.

Runs against a real Azurite. The baseline is one `QueueClient.send_message` of the same bytes;
the bridge's path adds building and validating the submission with the v1 contract and wrapping
it in the queue envelope. Prints medians and the ratio; the target is "well under a second".

    .venv/bin/python bench/submit_latency.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from azure.storage.queue import QueueClient

from bridge.contracts import Submission
from bridge.local.azurite import Azurite
from bridge.provider.senders import QueueEnvelope, StorageQueueSender

JOB = {
    "type": "command",
    "command": "python -c 'print(${{inputs.lr}})'",
    "inputs": {"lr": 0.01},
    "environment": "azureml:bench:1",
    "compute": "cpu-cluster",
    "experiment_name": "bench",
}


def submission(index: int) -> Submission:
    return Submission.model_validate(
        {
            "origin": {"dag_id": "bench", "run_id": f"r{index}", "task_id": "submit"},
            "job": {"kind": "yaml", "spec": JOB},
            "on": {"completed": ["azureml://bench/done"], "failed": ["azureml://bench/failed"]},
        }
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main(rounds: int) -> None:
    with Azurite(Path(tempfile.mkdtemp())) as azurite:
        raw = QueueClient.from_connection_string(azurite.connection_string, "baseline")
        raw.create_queue()
        sender = StorageQueueSender(azurite.connection_string, "bridge")
        sender.send(submission(-1))  # creates the queue and warms the client
        text = QueueEnvelope.for_submission(submission(-2)).encode()
        baseline, bridge = [], []
        for index in range(rounds):
            started = time.perf_counter()
            raw.send_message(text)
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            job = Submission.parse(submission(index).to_json())  # what the operator does
            sender.send(job)
            bridge.append(time.perf_counter() - started)
        sender.close()
        raw.close()
    print(f"rounds: {rounds}")
    print(f"baseline  bare queue send      median {median_ms(baseline):7.2f} ms")
    print(f"bridge    validate + send      median {median_ms(bridge):7.2f} ms")
    print(f"ratio     bridge / baseline    {median_ms(bridge) / median_ms(baseline):7.2f}x")
    print(f"bridge    p95                  {sorted(bridge)[int(rounds * 0.95)] * 1000:7.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
