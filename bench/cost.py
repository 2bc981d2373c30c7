"""What 1,000 jobs cost in Azure, the bridge against a poller: the formula, and its prices.

Every price is pay-as-you-go, USD, East US, with its source. Azure's own pricing pages render
their figures by script, so several could not be read from a stored copy: those are marked
`verified=False` and come from Azure's published list prices as widely quoted; confirm them with
the Retail Prices API (https://prices.azure.com/api/retail/prices) before you quote a bill.
Free grants are left out: they make small volumes free and would hide the formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Price:
    usd: float
    per: float  # units the price is for
    unit: str
    source: str
    verified: bool

    def cost(self, units: float) -> float:
        return self.usd * units / self.per


PRICES = {
    "functions_gb_s": Price(
        0.000026, 1, "GB-s of instance memory while executing (Flex Consumption, on demand)",
        "https://azure.microsoft.com/pricing/details/functions/ ; billing model: "
        "https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan", False),
    "functions_executions": Price(
        0.40, 1e6, "executions (Flex Consumption, on demand)",
        "https://azure.microsoft.com/pricing/details/functions/", False),
    "service_bus_operations": Price(
        0.80, 1e6, "operations beyond the 13M included (Standard)",
        "https://azure.microsoft.com/pricing/details/service-bus/", False),
    "event_grid_operations": Price(
        0.60, 1e6, "operations: each publish and each delivery attempt (Basic)",
        "https://learn.microsoft.com/azure/iot-hub/iot-hub-event-grid-routing-comparison", True),
    "table_transactions": Price(
        0.00036, 1e4, "transactions (Standard LRS; an entity-group transaction is one)",
        "https://azure.microsoft.com/pricing/details/storage/tables/", False),
    "vm_hour": Price(
        0.192, 1, "hour of a Standard_D4s_v5 Linux VM (an Airflow worker)",
        "https://azure.microsoft.com/pricing/details/virtual-machines/linux/", False),
}  # fmt: skip

# Assumptions, each stated in docs/benchmarks.md.
INSTANCE_GB = 2.048  # Flex Consumption's default instance memory
MIN_BILLED_SECONDS = 1.0  # Flex bills at least 1,000 ms per active period
WORKER_SLOTS_PER_VM = 16  # Celery's default worker_concurrency on the D4s_v5
EVENTS_RAISED_PER_JOB = 6  # Queued, Running, Finalizing, Completed status changes + RunCompleted
EVENTS_DELIVERED_PER_JOB = 2  # the subscription's filter passes the terminal ones only
SERVICE_BUS_OPERATIONS_PER_JOB = 3  # send, receive (peek-lock), complete
# Ledger transactions per job: submit (watch, insert, update), event (read, claim, settle,
# update), the duplicate terminal event (read), and the sweep that drops the row (read, delete).
TABLE_TRANSACTIONS_PER_JOB = 3 + 4 + 1 + 2
SWEEPS_PER_DAY = 24 * 12  # the reconcile timer, every 5 minutes


def bridge_per_1000(jobs_per_day: float, reconcile_reads_per_job: float) -> dict[str, Any]:
    """The bridge's Azure bill for 1,000 jobs, item by item (USD)."""
    jobs = 1000.0
    sweeps = SWEEPS_PER_DAY * jobs / jobs_per_day
    executions = jobs * (1 + EVENTS_DELIVERED_PER_JOB) + sweeps
    items = {
        "Functions executions": PRICES["functions_executions"].cost(executions),
        "Functions GB-s": PRICES["functions_gb_s"].cost(
            executions * MIN_BILLED_SECONDS * INSTANCE_GB
        ),
        "Service Bus operations": PRICES["service_bus_operations"].cost(
            jobs * SERVICE_BUS_OPERATIONS_PER_JOB
        ),
        "Event Grid operations": PRICES["event_grid_operations"].cost(
            jobs * (EVENTS_RAISED_PER_JOB + EVENTS_DELIVERED_PER_JOB)
        ),
        "Table transactions": PRICES["table_transactions"].cost(
            jobs * (TABLE_TRANSACTIONS_PER_JOB + reconcile_reads_per_job * 2) + sweeps
        ),
    }
    return {
        "items": {name: round(usd, 4) for name, usd in items.items()},
        "total_usd": round(sum(items.values()), 4),
        "executions": round(executions),
        "azureml_reads": round(jobs * reconcile_reads_per_job),
    }


def poller_per_1000(job_seconds: float) -> dict[str, Any]:
    """A blocking poller's bill for 1,000 jobs: the worker slot each job holds while it runs."""
    slot_hours = 1000.0 * job_seconds / 3600
    usd = PRICES["vm_hour"].cost(slot_hours / WORKER_SLOTS_PER_VM)
    return {"slot_hours": round(slot_hours, 1), "total_usd": round(usd, 2)}


def prices() -> dict[str, dict[str, Any]]:
    return {
        name: {"usd": p.usd, "per": p.per, "unit": p.unit, "source": p.source,
               "verified": p.verified}
        for name, p in PRICES.items()
    }  # fmt: skip
