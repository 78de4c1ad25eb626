"""Cron and interval schedules, fired once per tick however many schedulers run.

Fire times come from APScheduler 3 cron triggers, made safe across clock changes
(``schedule_times.Rule``); the clock is the
Redis server's, so schedulers on machines whose clocks disagree agree on "now". Each
tick is submitted with a task id and an idempotency key derived from the schedule and
the tick's time: the enqueue script's ``SET NX`` on that key stores at most one task
per tick, so running two or three schedulers for availability is safe.

A running scheduler fires every tick that came due since it last looked (after a pause
too). On start, missed ticks follow each schedule's ``misfire``: ``skip`` fires none,
``once`` fires the latest one due within ``misfire_grace``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dtqs.runtime.client import Client
from dtqs.runtime.emf import EmfEmitter
from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.manifest import Manifest, ScheduleSpec
from dtqs.runtime.schedule_times import Rule, rule

log = logging.getLogger("dtqs.scheduler")

#: Longest sleep between looks (a reload or a stop is noticed within it).
MAX_SLEEP_S = 1.0
#: Pause after a look that failed (Redis away) before the next one.
RETRY_S = 0.25
#: Most ticks of one schedule fired in one look (a long pause catches up the latest).
MAX_CATCH_UP = 100
#: Tick keys outlive the misfire grace by this much, so a catch-up never doubles a tick.
TICK_KEY_MARGIN_S = 3600.0


def tick_id(queue: str, schedule: str, fire_ms: int) -> str:
    return f"{queue}.cron-{schedule}-{fire_ms}"


def jitter_ms(spec: ScheduleSpec, fire_ms: int) -> int:
    """A delay within the schedule's jitter, the same in every scheduler for one tick."""
    if spec.jitter_s <= 0:
        return 0
    digest = hashlib.sha256(f"{spec.name}:{fire_ms}".encode()).digest()
    return int(int.from_bytes(digest[:4], "big") / 2**32 * spec.jitter_s * 1000)


@dataclass
class Entry:
    spec: ScheduleSpec
    rule: Rule
    cursor: datetime  #: ticks at or before this have been handled


class Scheduler:
    """Fires the manifest's schedules through `client`; `clock` defaults to Redis time."""

    def __init__(
        self,
        client: Client,
        clock: Callable[[], datetime] | None = None,
        emf: EmfEmitter | None = None,
    ) -> None:
        self.client = client
        self.clock = clock or self.redis_now
        self.emf = emf  #: CloudWatch metrics between ticks, when configured
        self.entries: dict[str, Entry] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.started = False
        self._pending: Manifest | None = None  #: a manifest to load once Redis answers
        self._last_trouble = ""

    def redis_now(self) -> datetime:
        return datetime.fromtimestamp(self.client.broker.server_time_ms() / 1000, UTC)

    # -- what to fire -------------------------------------------------------------

    def load(self, manifest: Manifest, now: datetime, *, starting: bool = False) -> None:
        """Take the manifest's schedules; unchanged ones keep their place in time."""
        with self._lock:
            self.client.use_manifest(manifest)
            old, self.entries = self.entries, {}
            for name, spec in manifest.schedules.items():
                found = rule(spec)
                if found is None:
                    continue
                kept = old.get(name)
                if kept is not None and kept.spec == spec:
                    self.entries[name] = kept
                    continue
                self.entries[name] = entry = Entry(spec, found, now)
                if starting and spec.misfire == "once":
                    self.catch_up(entry, now)

    def start(self, manifest: Manifest) -> None:
        self.load(manifest, self.clock(), starting=True)
        self.started = True
        log.info("scheduler firing %s", ", ".join(self.entries) or "no schedules")

    def reload(self, manifest: Manifest) -> None:
        """Take a new manifest (hot reload). While Redis is away (its clock places new
        schedules in time) or before the first start, it is loaded at the next look
        that reaches Redis: a valid manifest never fails to reload for an outage."""
        with self._lock:
            self._pending = manifest
        try:
            self._apply_pending()
        except BrokerUnavailableError as exc:
            self.trouble(exc)

    def _apply_pending(self) -> None:
        with self._lock:
            manifest = self._pending
        if manifest is None:
            return
        if not self.started:
            self.start(manifest)
        else:
            self.load(manifest, self.clock())
            log.info("schedules reloaded: %s", ", ".join(self.entries) or "none")
        with self._lock:
            if self._pending is manifest:
                self._pending = None

    def trouble(self, exc: DtqsError, what: str = "scheduler") -> None:
        """A look failed and will be retried. An outage is logged once by the broker
        (runtime/outage.py); another error once until it changes."""
        if isinstance(exc, BrokerUnavailableError) and exc.outage:
            return
        if exc.message != self._last_trouble:
            self._last_trouble = exc.message
            log.warning("%s: %s; retrying", what, exc.message)

    def due(self, entry: Entry, now: datetime, limit: int = MAX_CATCH_UP) -> list[datetime]:
        """Ticks in (entry.cursor, now], oldest first; the latest `limit` of them."""
        out: list[datetime] = []
        previous = entry.cursor
        while True:
            fire = entry.rule.next_at_or_after(previous + timedelta(microseconds=1))
            if fire is None or fire > now:
                break
            if fire > entry.cursor:
                out.append(fire)
            previous = fire
        if len(out) > limit:
            log.warning("schedule %s: %d ticks missed; firing the latest %d",
                        entry.spec.name, len(out), limit)  # fmt: skip
        return out[-limit:]

    def catch_up(self, entry: Entry, now: datetime) -> None:
        """misfire: once — fire the latest tick missed within the grace (if not fired)."""
        earlier = dataclasses.replace(
            entry, cursor=now - timedelta(seconds=entry.spec.misfire_grace_s)
        )
        missed = self.due(earlier, now, limit=1)
        if missed:
            self.fire(entry.spec, missed[-1], catch_up=True)

    # -- firing -------------------------------------------------------------------

    def fire(self, spec: ScheduleSpec, at: datetime, *, catch_up: bool = False) -> bool:
        """Submit one tick; True when this scheduler stored it (False: another did)."""
        fire_ms = int(at.timestamp() * 1000)
        function = self.client.function(spec.function)
        queue, task = self.client.prepare(
            spec.function,
            spec.payload,
            idempotency_key=f"cron:{spec.name}:{fire_ms}",
            task_id=tick_id(function.queue, spec.name, fire_ms),
        )
        keep_s = max(function.idempotency_ttl_s, spec.misfire_grace_s + TICK_KEY_MARGIN_S)
        task = dataclasses.replace(
            task,
            idempotency_ttl_ms=int(keep_s * 1000),
            delay_ms=jitter_ms(spec, fire_ms) or -1,
            headers_json=json.dumps({"dtqs-schedule": spec.name, "dtqs-fire-time": at.isoformat()}),
        )
        answer = self.client.store([(queue, task)])[0]
        if answer.stored:
            self.client.broker.record_fire(spec.name, fire_ms, answer.id)
            log.info("%s %s -> %s", "caught up" if catch_up else "fired", spec.name, answer.id)
        return answer.stored

    def tick(self) -> float:
        """Fire what is due; returns seconds until the next tick (at most MAX_SLEEP_S)."""
        now = self.clock()
        wait = MAX_SLEEP_S
        with self._lock:
            for entry in self.entries.values():
                for at in self.due(entry, now):
                    try:
                        self.fire(entry.spec, at)
                    except DtqsError as exc:
                        # NOTE: leave the cursor before this tick; the next look retries it.
                        self.trouble(exc, f"schedule {entry.spec.name}: tick {at.isoformat()}")
                        break
                    entry.cursor = at
                else:
                    entry.cursor = now
                upcoming = entry.rule.next_at_or_after(now + timedelta(microseconds=1))
                if upcoming is not None:
                    wait = min(wait, max((upcoming - now).total_seconds(), 0.0))
        return wait

    def run(self, manifest: Manifest | None = None) -> None:
        """Fire until stop() is called; Redis outages are waited out.

        ``manifest``: start with it first (at the first look that reaches Redis: a
        scheduler started before Redis starts firing as soon as it answers).
        """
        if manifest is not None:
            with self._lock:
                self._pending = self._pending or manifest
        while not self.stopping.is_set():
            wait = MAX_SLEEP_S
            try:
                self._apply_pending()
                if self.started:
                    wait = self.tick()
                if self.emf is not None:
                    self.emf.maybe_emit()
                    wait = min(wait, self.emf.seconds_until_due())
            except DtqsError as exc:
                self.trouble(exc)
                wait = RETRY_S  # NOTE: back within a fraction of a second of Redis
            self.stopping.wait(wait + 0.001)

    def stop(self) -> None:
        self.stopping.set()
