"""NCRONTAB schedules, as the Functions timer trigger reads them: six fields,
`{second} {minute} {hour} {day} {month} {day-of-week}`.

Used to check `BRIDGE_RECONCILE_SCHEDULE` before deployment and by the local dev host to fire the
reconcile sweep when the Functions host would. Each field takes `*`, a number, a range `a-b`, a
step `*/n` or `a-b/n`, and lists of those; months and days of the week also take English names
(`Jan`, `Mon`); day-of-week 0 and 7 are Sunday. A time matches when every field matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.errors import ConfigurationError

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_HORIZON = timedelta(days=5 * 366)


@dataclass(frozen=True)
class Schedule:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, text: str) -> Schedule:
        parts = text.split()
        if len(parts) != len(_FIELDS):
            raise ConfigurationError(
                f"schedule {text!r} has {len(parts)} fields; NCRONTAB takes 6: "
                "second minute hour day month day-of-week (e.g. '0 */5 * * * *')"
            )
        values = [_field(part, *spec, text=text) for part, spec in zip(parts, _FIELDS, strict=True)]
        seconds, minutes, hours, days, months, weekdays = values
        return cls(text, seconds, minutes, hours, days, months, frozenset(d % 7 for d in weekdays))

    def next_after(self, when: datetime) -> datetime:
        """The first time strictly after `when` (to the second) that the schedule fires."""
        at = when.replace(microsecond=0) + timedelta(seconds=1)
        limit = when + _HORIZON
        while at <= limit:
            if at.month not in self.months:
                at = (at.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(
                    day=1
                )
            elif at.day not in self.days or (at.isoweekday() % 7) not in self.weekdays:
                at = at.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif at.hour not in self.hours:
                at = at.replace(minute=0, second=0) + timedelta(hours=1)
            elif at.minute not in self.minutes:
                at = at.replace(second=0) + timedelta(minutes=1)
            elif at.second not in self.seconds:
                at += timedelta(seconds=1)
            else:
                return at
        raise ConfigurationError(f"schedule {self.text!r} never fires")


def _field(part: str, name: str, low: int, high: int, *, text: str) -> frozenset[int]:
    chosen: set[int] = set()
    for item in part.split(","):
        span, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                start, end = span.split("-", 1)
                first, last = _number(start, name), _number(end, name)
            else:
                first = _number(span, name)
                last = high if step_text else first
        except ValueError:
            raise ConfigurationError(
                f"schedule {text!r}: {name} field {part!r} is not a number, range, step or list"
            ) from None
        if step < 1 or not low <= first <= last <= high:
            raise ConfigurationError(
                f"schedule {text!r}: {name} field {part!r} is outside {low}-{high}"
            )
        chosen.update(range(first, last + 1, step))
    return frozenset(chosen)


def _number(text: str, name: str) -> int:
    word = text.strip().lower()[:3]
    if name == "month" and word in _MONTHS:
        return _MONTHS.index(word) + 1
    if name == "day-of-week" and word in _DAYS:
        return _DAYS.index(word)
    return int(text)
