"""Submissions confirmed by replicas: the manifest's ``redis.wait_replicas``.

Redis replicates asynchronously, so a master that dies right after acknowledging a
write may take it along when its replica is promoted. With ``wait_replicas: N`` a
submission is acknowledged only after ``WAIT N timeout`` says N replicas have it.

WAIT counts the writes made on *its own connection*, so the enqueue scripts and the
WAIT travel in one pipeline on one connection: of the master (one server, Sentinel)
or of each master a batch touches (Cluster, where a cluster pipeline cannot carry a
keyless WAIT to a chosen node).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.redis.connect import is_cluster
from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.redis.scripts import NewTask, Scripts

Call = tuple[list[str], list[Any]]

#: Replies that mean the cluster's layout moved under us (failover, resharding).
_MOVED = (redis.exceptions.MovedError, redis.exceptions.AskError, redis.exceptions.TryAgainError)


def enqueue_confirmed(
    client: Any,
    scripts: Scripts,
    groups: Sequence[tuple[QueueKeys, Sequence[NewTask]]],
    replicas: int,
    timeout_ms: int,
    not_after_ms: int = -1,
) -> list[Any]:
    """Run the enqueue calls of `groups`; raise BrokerUnavailableError unless `replicas`
    replicas of every master involved confirm them within `timeout_ms`.

    The tasks may be stored even when this raises (the master has them, the replicas
    did not answer in time): a caller that retries should send the same idempotency
    key, as after any lost reply.
    """
    script, calls = scripts.enqueue_calls(groups, not_after_ms)
    if not is_cluster(client):
        return _run_and_wait(client, script, calls, replicas, timeout_ms)
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, (keys, _) in enumerate(calls):
        node = client.get_node_from_key(keys[0])
        by_node.setdefault(node.name, (client.get_redis_connection(node), []))[1].append(i)
    replies: list[Any] = [None] * len(calls)
    try:
        for node_client, indexes in by_node.values():
            done = _run_and_wait(node_client, script, [calls[i] for i in indexes], replicas,
                                 timeout_ms)  # fmt: skip
            for i, reply in zip(indexes, done, strict=True):
                replies[i] = reply
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, *_MOVED) as exc:
        # NOTE: we bypassed the cluster client, so it learns a new layout only if told.
        client.nodes_manager.initialize()
        raise BrokerUnavailableError(f"Redis Cluster is changing its layout: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if "replica" not in str(exc):  # "WAIT cannot be used with replica instances"
            raise
        client.nodes_manager.initialize()  # a demoted master, still in our old layout
        raise BrokerUnavailableError(f"Redis Cluster is changing its layout: {exc}") from exc
    return replies


def _run_and_wait(
    client: Any, script: Script, calls: Sequence[Call], replicas: int, timeout_ms: int
) -> list[Any]:
    replies, confirmed = _pipeline(client, script.sha, calls, replicas, timeout_ms)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:  # a restarted or promoted server without our scripts: load, redo those
        client.script_load(script.script)
        again, more = _pipeline(client, script.sha, [calls[i] for i in missing], replicas,
                                timeout_ms)  # fmt: skip
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
        if not isinstance(confirmed, Exception):  # else keep the first error
            confirmed = more if isinstance(more, Exception) else min(confirmed, more)
    for reply in replies:  # NOTE: before WAIT's own error: a MOVED says more
        if isinstance(reply, Exception):
            raise reply
    if isinstance(confirmed, Exception):
        raise confirmed
    if confirmed < replicas:
        raise BrokerUnavailableError(
            f"stored on the master but confirmed by {confirmed} of {replicas} replicas "
            f"within {timeout_ms} ms (redis.wait_replicas); retry with the same idempotency key",
            outage=False,
        )
    return replies


def _pipeline(
    client: Any, sha: str, calls: Sequence[Call], replicas: int, timeout_ms: int
) -> tuple[list[Any], Any]:
    """EVALSHA per call, then WAIT, on one connection: (script replies, WAIT's reply:
    how many replicas confirmed, or its error)."""
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    *replies, confirmed = pipe.execute(raise_on_error=False)
    return list(replies), confirmed
