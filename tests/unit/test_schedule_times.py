"""Fire times across clock changes, where APScheduler 3's cron trigger alone goes wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dtqs.runtime.manifest import ScheduleSpec
from dtqs.runtime.schedule_times import Rule, next_fire_times

PARIS = ZoneInfo("Europe/Paris")


def test_a_repeated_hour_fires_once_and_does_not_stall():
    # 2026-10-25: Paris goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    spec = ScheduleSpec("s", "f", cron="30 2 * * *", timezone="Europe/Paris")
    times = next_fire_times(spec, 3, now=datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert [t.astimezone(PARIS).day for t in times] == [25, 26, 27]
    assert times[0] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30


def test_a_skipped_hour_still_fires_that_day_whenever_asked():
    # 2026-03-29: 02:00-03:00 does not exist in Paris; 02:30 fires at 03:30 CEST (01:30Z).
    rule = Rule(ScheduleSpec("s", "f", cron="30 2 * * *", timezone="Europe/Paris"))
    expected = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    for asked in ("00:40", "00:59", "01:00", "01:10", "01:29"):
        hour, minute = map(int, asked.split(":"))
        assert rule.next_at_or_after(datetime(2026, 3, 29, hour, minute, tzinfo=UTC)) == expected


def test_every_half_hour_across_both_changes_is_strictly_increasing():
    spec = ScheduleSpec("s", "f", cron="*/30 * * * *", timezone="Europe/Paris")
    for day in (datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 10, 24, 22, tzinfo=UTC)):
        times = next_fire_times(spec, 12, now=day)
        assert times == sorted(set(times)) and len(times) == 12
        # Each wall time fires once: the repeated hour's 02:00 and 02:30 are not fired again.
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(timedelta(minutes=30) <= g <= timedelta(minutes=90) for g in gaps), gaps


def test_intervals_count_from_the_anchor_in_any_zone():
    rule = Rule(ScheduleSpec("s", "f", every_s=7.5, timezone="Europe/Paris"))
    at = datetime(2026, 3, 29, 1, 0, 1, tzinfo=UTC)
    assert rule.next_at_or_after(at) == datetime(2026, 3, 29, 1, 0, 7, 500_000, tzinfo=UTC)
    assert rule.next_at_or_after(datetime(2026, 3, 29, 1, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, tzinfo=UTC
    )
