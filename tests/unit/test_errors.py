from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bridge.errors import PermanentError, PolicyViolation, TransientError, retry_after_seconds


@pytest.mark.parametrize(
    ("header", "seconds"), [("120", 120.0), ("0", 0.0), ("-5", 0.0), (None, None), ("soon", None)]
)
def test_retry_after_delta_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    waited = retry_after_seconds(later)
    assert waited is not None and 80 <= waited <= 90


def test_error_classes_say_permanent_or_transient() -> None:
    assert issubclass(PolicyViolation, PermanentError)
    assert not issubclass(TransientError, PermanentError)
    assert TransientError("busy", retry_after=3).retry_after == 3
