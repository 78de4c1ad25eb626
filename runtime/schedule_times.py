"""When a schedule fires: its APScheduler trigger and its next fire times.

The API, the CLI and the scheduler share these, so that what `GET /v1/schedules`
shows is what the scheduler does.

Cron expressions mean what crontab(5) says, which APScheduler 3's ``from_crontab``
does not quite do (its issue 286): there, weekday 0 is Monday (in crontab, Sunday)
and 7 is refused; and a rule that restricts both day of month and day of week
fires when both match (in crontab, when either does). ``cron_trigger`` corrects both.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from dtqs.runtime.manifest import ScheduleSpec

#: Where `every:` intervals count from. NOTE: a fixed anchor, not a process's start
#: time, so every scheduler process computes the same fire times (and so the same
#: tick ids, which is what makes N schedulers submit each tick once).
INTERVAL_ANCHOR = datetime(1970, 1, 1, tzinfo=UTC)

#: More than any clock change moves local time (searches across one look this far).
DST_MARGIN = timedelta(hours=3)

#: Weekday names in crontab order: crontab's 0 (and 7) is Sunday.
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_ITEM = re.compile(r"^(\*|[a-z]{3}|[0-7])(?:-([a-z]{3}|[0-7]))?(?:/([1-9]\d*))?$")


def _day(token: str) -> int:
    return int(token) if token.isdigit() else _DAYS.index(token)


def _crontab_days(item: str) -> set[int] | None:
    """Crontab weekdays (0 = Sunday) of one comma-separated item; None if not understood."""
    match = _DOW_ITEM.match(item.lower())
    if match is None:
        return None
    first, last, step = match[1], match[2], int(match[3] or 1)
    names = [t for t in (first, last) if t and t != "*" and not t.isdigit()]
    if any(t not in _DAYS for t in names) or (first == "*" and last):
        return None
    if first == "*":
        start, end = 0, 6
    else:
        start = _day(first)
        end = _day(last) if last else (7 if match[3] else start)
        if end < start:  # e.g. fri-sun: through the end of the week
            end += 7
    return {d % 7 for d in range(start, end + 1, step)}


def _aps_day_of_week(field: str) -> str:
    """A crontab day-of-week field rewritten in names, which APScheduler reads right."""
    days: set[int] = set()
    for item in field.split(","):
        found = _crontab_days(item)
        if found is None:  # NOTE: not crontab syntax; left for APScheduler to judge
            return field
        days |= found
    if len(days) == len(_DAYS):
        return "*"
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, timezone: str = "UTC") -> BaseTrigger:
    """A trigger that fires when the crontab expression `expr` matches, in `timezone`.

    Raises:
        ValueError: `expr` is not a valid five-field cron expression.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, written = fields
    weekday = _aps_day_of_week(written)

    def make(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=timezone
        )

    if day.startswith("*") or written.startswith("*"):
        return make(day, weekday)
    # NOTE(cron): both restricted: crontab fires on either (the 1st, and every Monday).
    return OrTrigger([make(day, "*"), make("*", weekday)])


class Rule:
    """When a schedule fires, as instants in UTC.

    Cron fields are matched against wall-clock time in the schedule's zone. APScheduler
    3 alone goes wrong across clock changes (asked from after a skipped hour it loses
    that day's tick; in a repeated hour it returns the same tick again and again), so
    its trigger runs here on naive wall time, and wall times become instants with
    zoneinfo: a wall time that occurs twice fires once (its first occurrence), one that
    does not occur fires at the same distance after the change (02:30 -> 03:30).
    Intervals are plain arithmetic from INTERVAL_ANCHOR.
    """

    def __init__(self, spec: ScheduleSpec) -> None:
        self.zone = ZoneInfo(spec.timezone)
        self.every_us = round(spec.every_s * 1e6) if spec.every_s else 0
        self.walls = cron_trigger(spec.cron, "UTC") if spec.cron is not None else None

    def next_at_or_after(self, moment: datetime) -> datetime | None:
        if self.walls is None:
            elapsed = (moment - INTERVAL_ANCHOR) // timedelta(microseconds=1)
            periods = -(-elapsed // self.every_us)  # ceiling division
            return INTERVAL_ANCHOR + timedelta(microseconds=periods * self.every_us)
        wall = moment.astimezone(self.zone).replace(tzinfo=UTC) - DST_MARGIN
        best: datetime | None = None
        horizon: datetime | None = None
        while True:
            found = self.walls.get_next_fire_time(None, wall)
            if found is None or (horizon is not None and found > horizon):
                return best
            instant = found.replace(tzinfo=self.zone).astimezone(UTC)  # fold=0: first occurrence
            if instant >= moment and (best is None or instant < best):
                best = instant
                if self._steady(found):
                    return best
                horizon = found + DST_MARGIN  # a clock change is near: later walls may map earlier
            wall = found + timedelta(microseconds=1)

    def _steady(self, wall: datetime) -> bool:
        """True when the zone's offset does not change within DST_MARGIN of `wall`."""
        naive = wall.replace(tzinfo=None)
        before = (naive - DST_MARGIN).replace(tzinfo=self.zone).utcoffset()
        after = (naive + DST_MARGIN).replace(tzinfo=self.zone).utcoffset()
        return before == after


def rule(spec: ScheduleSpec) -> Rule | None:
    """The rule of an enabled schedule (None when disabled or with neither cron nor every)."""
    if not spec.enabled or (spec.cron is None and not spec.every_s):
        return None
    return Rule(spec)


def next_fire_times(
    spec: ScheduleSpec, count: int = 3, now: datetime | None = None
) -> list[datetime]:
    """The next `count` fire times at or after `now` (default: the current time), in UTC.

    A disabled schedule has none. Cron fields are read in the schedule's time zone, so
    a daily 09:00 in Europe/Paris moves by an hour in UTC when the clocks change.
    """
    found = rule(spec)
    if found is None or count <= 0:
        return []
    now = now or datetime.now(UTC)
    if now.tzinfo is None:  # NOTE: naive times are taken as UTC, as elsewhere in dtqs
        now = now.replace(tzinfo=UTC)
    out: list[datetime] = []
    moment = now
    while len(out) < count:
        fire = found.next_at_or_after(moment)
        if fire is None:  # NOTE: a cron expression can match nothing more (e.g. a 30 February)
            break
        out.append(fire)
        moment = fire + timedelta(microseconds=1)
    return out
