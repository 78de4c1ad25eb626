"""The scheduler against real Redis, driven by a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.scheduler import Scheduler, jitter_ms

pytestmark = pytest.mark.redis

MANIFEST = """\
version: 1
queues: {{default: {{}}}}
functions:
  echo: {{handler: functions/tasks.py:echo, result_ttl: 0}}
schedules:
{schedules}
"""
FILES = {"functions/tasks.py": "def echo(payload):\n    return payload\n"}


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@pytest.fixture
def make(project, redis_url, r):
    made: list[Client] = []

    def build(schedules: str, at: datetime, count: int = 1):
        manifest = project(MANIFEST.format(schedules=schedules), FILES).manifest()
        clock = Clock(at)
        runners = []
        for _ in range(count):
            client = Client(redis_url=redis_url, manifest=manifest)
            made.append(client)
            runner = Scheduler(client, clock)
            runner.start(manifest)
            runners.append(runner)
        return runners, clock, manifest

    yield build
    for c in made:
        c.close()


def fired(r, name: str = "tick") -> list[int]:
    """Fire times (ms) of the tasks a schedule submitted, from their ids."""
    ids = r.lrange("dtqs:{default}:pending:2", 0, -1) + r.zrange("dtqs:{default}:scheduled", 0, -1)
    return sorted(int(i.rsplit("-", 1)[1]) for i in ids if f".cron-{name}-" in i)


T0 = datetime(2026, 1, 5, 12, 0, 0, 500_000, tzinfo=UTC)


def test_every_second_fires_each_tick_once_across_three_schedulers(make, r):
    runners, clock, _ = make("  tick: {function: echo, every: 1s, payload: {n: 1}}", T0, count=3)
    for _ in range(40):
        clock.advance(seconds=0.25)
        for runner in runners:
            runner.tick()
    start = int(T0.timestamp()) * 1000 + 1000
    assert fired(r) == list(range(start, start + 10_000, 1000))


def test_a_paused_scheduler_catches_up_every_tick_it_missed(make, r):
    (runner,), clock, _ = make("  tick: {function: echo, every: 1s}", T0)
    clock.advance(seconds=5)
    runner.tick()
    assert len(fired(r)) == 5


def test_cron_across_daylight_saving_changes_fires_once_a_day(make, r):
    paris = ZoneInfo("Europe/Paris")
    # The night of 29 March 2026 skips 02:00-03:00; 25 October 2026 repeats 02:00-03:00.
    for start in (
        datetime(2026, 3, 27, 12, tzinfo=paris),
        datetime(2026, 10, 23, 12, tzinfo=paris),
    ):
        r.flushdb()
        (runner,), clock, _ = make(
            '  tick: {function: echo, cron: "30 2 * * *", timezone: Europe/Paris}', start
        )
        for _ in range(4 * 24 * 6):  # four days in ten-minute steps
            clock.advance(minutes=10)
            runner.tick()
        days = [datetime.fromtimestamp(ms / 1000, paris).date() for ms in fired(r)]
        assert len(days) == 4 and len(set(days)) == 4, days


def test_misfire_once_fires_the_latest_missed_tick_within_grace(make, r):
    at = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    yaml = '  tick: {function: echo, cron: "0 * * * *", misfire: once, misfire_grace: 1h}'
    runners, _, _ = make(yaml, at)
    assert fired(r) == [int(datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp() * 1000)]
    runners[0].start(runners[0].client.manifest)  # a second start: the tick is not doubled
    assert len(fired(r)) == 1
    r.flushdb()
    make(yaml.replace("1h", "10m"), at)  # missed longer ago than the grace
    make(yaml.replace("once", "skip"), at)
    assert fired(r) == []


def test_jitter_delays_each_tick_the_same_in_every_scheduler(make, r):
    runners, clock, manifest = make("  tick: {function: echo, every: 1s, jitter: 5s}", T0, count=2)
    spec = manifest.schedules["tick"]
    delays = {jitter_ms(spec, ms) for ms in range(0, 100_000, 1000)}
    assert all(0 <= d < 5000 for d in delays) and len(delays) > 50
    clock.advance(seconds=1)
    for runner in runners:
        runner.tick()
    assert r.zcard("dtqs:{default}:scheduled") == 1


def test_disabled_schedules_do_not_fire_and_reload_keeps_places(make, r, project):
    yaml = "  tick: {function: echo, every: 1s}\n  off: {function: echo, every: 1s, enabled: false}"
    (runner,), clock, manifest = make(yaml, T0)
    clock.advance(seconds=2)
    runner.tick()
    assert len(fired(r)) == 2 and fired(r, "off") == []
    more = project(MANIFEST.format(schedules=yaml + "\n  new: {function: echo, every: 1s}"), FILES)
    runner.reload(more.manifest())
    clock.advance(seconds=2)
    runner.tick()
    assert len(fired(r)) == 4 and len(fired(r, "new")) == 2


def test_last_fire_is_recorded_for_listings(make, r):
    (runner,), clock, _ = make("  tick: {function: echo, every: 1s}", T0)
    clock.advance(seconds=1)
    runner.tick()
    last = runner.client.broker.last_fires(["tick", "nothing"])
    assert last["tick"]["last_task_id"].startswith("default.cron-tick-")
    assert last["nothing"] == {}
