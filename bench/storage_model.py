"""Azure Table Storage's latency, on Azurite: a loopback proxy in front of Azurite's Table endpoint
holds each request for a time drawn from a model of Azure's, and serves requests concurrently (in a
process of its own: its threads must not wait on the load generator's GIL).

Why: Azurite answers on loopback in about 1.5 ms and serves one request at a time, so on Azurite
the ledger looks both faster than Azure's (one at a time) and slower (many at once). Azure Table
Storage serves concurrent requests in parallel, at a latency of its own. With the model, the
benchmark's storage behaves like Azure's in both respects; Azurite's own service time stays
underneath it, serial but short.

The model (end to end, a client in the storage account's region, warm connections), lognormal:

| operation | p50 | p99 |
|---|---|---|
| point read (GET) | 6 ms | 40 ms |
| write (insert, merge, replace, delete) | 10 ms | 100 ms |

No public source gives percentiles for single Table operations; these rest on what there is:
- reads "under 10 ms" from inside Azure: Azure/Azure-Functions#1238 (an EP1 Function reading a
  table in its region) and vunvulearadu.blogspot.com/2016/01/azure-table-performance-1-vs-100000;
- writes: jessebenson/azure-performance (Service Fabric VMs beside a Standard LRS account, ~1 KB
  `InsertOrReplace` at 10/s, an older .NET SDK): average 32-58 ms and p99 150-350 ms in 2017-2018
  (an upper bound: idle connections and that SDK); its 2019 rerun's blob writes, p50 7.7 ms and
  p99 68.7 ms, are the floor;
- Learn says Table Storage is "fast, but no upper bounds on latency" (cosmos-db/table-support).
So the model is an estimate, stated so that it can be argued with; docs/benchmarks.md shows every
figure it affects beside the one without it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.local.azurite import Azurite
from bridge.local.faults import FaultProxy
from bridge.local.process import Service, free_port, port_ready
from bridge.settings import Settings

REPO = Path(__file__).resolve().parents[1]

Z99 = 2.326  # the standard normal's 99th percentile


@dataclass(frozen=True)
class LogNormal:
    p50_ms: float
    p99_ms: float

    @property
    def sigma(self) -> float:
        return (math.log(self.p99_ms) - math.log(self.p50_ms)) / Z99

    def draw(self, rng: random.Random) -> float:
        """One latency, in seconds."""
        return rng.lognormvariate(math.log(self.p50_ms), self.sigma) / 1000


READ = LogNormal(6.0, 40.0)
WRITE = LogNormal(10.0, 100.0)


class TableLatency:
    """A latency per request, by its method: thread-safe, and the same sequence for a seed."""

    def __init__(self, seed: int = 18) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str) -> float:
        model = READ if method == "GET" else WRITE
        with self._lock:
            return model.draw(self._rng)


def describe() -> dict[str, dict[str, float]]:
    return {name: dataclasses.asdict(model) for name, model in (("read", READ), ("write", WRITE))}


@dataclass(frozen=True)
class Modelled:
    """The ledger's settings through the model, and the model's process (for its CPU)."""

    settings: Settings
    pid: int


@contextmanager
def modelled(azurite: Azurite, settings: Settings) -> Iterator[Modelled]:
    """`settings` whose ledger is reached through the model: Azurite behind the proxy, which runs
    in a process of its own, so that its threads do not share a GIL with the load generator."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.storage_model", str(azurite.table_port), str(port)]
    log = azurite.workdir / f"storage-model-{port}.log"
    service = Service("storage-model", argv, log=log, cwd=REPO, ready=port_ready(port)).start()
    try:
        service.wait_ready(30)
        assert service.process is not None and settings.ledger_connection_string is not None
        account = azurite.table_endpoint.rsplit("/", 1)[1]
        connection = settings.ledger_connection_string.replace(
            azurite.table_endpoint, f"http://127.0.0.1:{port}/{account}"
        )
        changed = dataclasses.replace(settings, ledger_connection_string=connection)
        yield Modelled(changed, service.process.pid)
    finally:
        service.stop(grace=2)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.storage_model AZURITE_TABLE_PORT PORT`: serve until stopped."""
    target, port = (argv if argv is not None else sys.argv[1:])[:2]
    proxy = FaultProxy(f"http://127.0.0.1:{target}", delay=TableLatency(), port=int(port),
                       record=False)  # fmt: skip
    proxy.start()
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
