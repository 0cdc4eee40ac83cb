"""The day is the unit of work: one partition per calendar day (UTC) of landed recordings."""

from __future__ import annotations

import datetime as dt

import dagster as dg

# First day the UI offers. Days before it are refused by `emo run` with a clear error.
START_DATE = "2024-01-01"

# end_offset=1: today is a partition too, so files landing today can be processed today.
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1)


class InvalidDayError(ValueError):
    pass


def validate_day(day: str) -> str:
    """Return ``day`` if it is a real calendar day in YYYY-MM-DD form within the partitions."""
    try:
        parsed = dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise InvalidDayError(f"invalid date {day!r}: expected a real calendar day as YYYY-MM-DD") from None
    if parsed.isoformat() != day:
        raise InvalidDayError(f"invalid date {day!r}: expected YYYY-MM-DD (e.g. {parsed.isoformat()})")
    if day < START_DATE:
        raise InvalidDayError(f"date {day} is before the first partition {START_DATE} (emo_assets/partitions.py)")
    return day
