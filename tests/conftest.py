from __future__ import annotations

import signal
from types import FrameType

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, `timeout`, `kill`) unwinds like Ctrl-C, so fixtures stop the servers
    they started instead of leaving Airflow, Azurite or emulator jobs running."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
