"""Listening for tasks that reached a final state (the scripts publish their ids).

One pub/sub connection per listener, subscribed to the ``finished`` channels of the
queues someone waits on (runtime/waiting.py keeps one listener per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dtqs.runtime.task import FINAL_STATES

if TYPE_CHECKING:
    from dtqs.runtime.redis.broker import Broker
    from dtqs.runtime.redis.keys import QueueKeys


class FinishedListener:
    """A subscription to some queues' ``finished`` channels."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._pubsub: Any = None
        self._channels: set[str] = set()

    def listen(self, channels: set[str], timeout_s: float) -> tuple[list[str], bool]:
        """Ids announced on `channels` within `timeout_s` (at most one message), and
        whether the subscription was made anew by this call: messages published before
        it were missed, so the caller should read the states it waits for once.

        Raises BrokerUnavailableError; the next call subscribes again.
        """
        fresh = False
        try:
            with self.broker.translated():
                if self._pubsub is None:
                    self._pubsub = self.broker.redis.pubsub(ignore_subscribe_messages=True)
                    self._channels, fresh = set(), True
                if channels - self._channels:
                    self._pubsub.subscribe(*(channels - self._channels))
                if self._channels - channels:
                    self._pubsub.unsubscribe(*(self._channels - channels))
                self._channels = set(channels)
                message = self._pubsub.get_message(timeout=timeout_s) if channels else None
        except Exception:
            self.close()
            raise
        if not message or message.get("type") != "message":
            return [], fresh
        return str(message["data"]).split(), fresh

    def close(self) -> None:
        pubsub, self._pubsub, self._channels = self._pubsub, None, set()
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - a dead connection is being dropped anyway
                pass


def ended(broker: Broker, qk: QueueKeys, ids: Sequence[str]) -> list[str]:
    """Which of `ids` are in a final state, or have no record (expired, never existed);
    one round trip."""
    with broker.translated():
        pipe = broker.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(qk.task(task_id), "state")
        states = pipe.execute(raise_on_error=False)
    pairs = zip(ids, states, strict=True)
    return [i for i, s in pairs if not isinstance(s, str) or s in FINAL_STATES]
