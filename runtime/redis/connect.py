"""Turn a Redis URL into the right redis-py client: one server, Sentinel, or Cluster.

URL forms (user and password are optional in each; percent-encode special characters):

- ``redis://[user:pass@]host:port[/db]``, ``rediss://…`` (TLS), ``unix://…``: one server.
- ``redis+sentinel://[user:pass@]host:port[,host:port…]/<master name>[/db]`` (and
  ``rediss+sentinel://``): ask the Sentinels where the master is, follow failovers.
  ``user:pass`` authenticate to the master; Sentinels that need a password of their
  own get it from the query: ``?sentinel_password=…[&sentinel_username=…]``.
- ``redis+cluster://[user:pass@]host:port[,host:port…][/]`` (and ``rediss+cluster://``):
  any reachable nodes of a Redis Cluster; the client discovers the rest.

TLS options ride in the query for every form (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs`` = none|optional|required, ``ssl_check_hostname``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import BlockingConnectionPool, parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from dtqs.runtime.errors import BrokerUnavailableError, SettingsError

#: Schemes of one server, handed to redis-py's own URL parser.
SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = (*SINGLE_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)

#: Query options of the multi-host forms (the one-server form takes redis-py's own).
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname")  # fmt: skip
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_SECRET_QUERY = re.compile(r"((?:^|&)[A-Za-z_]*password=)[^&]*")


def redact(url: str) -> str:
    """The URL without its passwords (userinfo and ``…password=`` query values)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    head, sep, query = rest.partition("?")
    query = _SECRET_QUERY.sub(r"\1***", query)
    if "@" in head:
        creds, hosts = head.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        head = f"{user + ':***' if ':' in creds else creds}@{hosts}"
    return f"{scheme}://{head}{sep}{query}"


@dataclass(frozen=True)
class Target:
    """A parsed multi-host URL (Cluster or Sentinel)."""

    scheme: str
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    service: str = ""  #: Sentinel: the master's name
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_url(url: str, source: str) -> str:
    """`url` if it is a Redis URL dtqs can use; else a SettingsError naming `source`."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise SettingsError(
            f"{source}: {redact(url)!r} is not a Redis URL; expected redis://, rediss://, "
            "unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or "
            "rediss+cluster://"
        )
    if scheme not in SINGLE_SCHEMES:
        parse(url, source)
        return url
    try:
        parse_url(url)
    except ValueError as exc:
        raise SettingsError(f"{source}: {redact(url)!r}: {exc}") from exc
    return url


def parse(url: str, source: str = "Redis URL") -> Target:
    """Split a Cluster or Sentinel URL; SettingsError (password redacted) when malformed."""
    scheme = scheme_of(url)
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    where = f"{source}: {redact(url)!r}"
    nodes = [_host_port(h, where) for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise SettingsError(f"{where}: names no host:port")
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = _TLS_OPTIONS + (_SENTINEL_OPTIONS if scheme in SENTINEL_SCHEMES else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SettingsError(
            f"{where}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}"
        )
    parts = [p for p in path.split("/") if p]
    service, db = "", 0
    if scheme in SENTINEL_SCHEMES:
        if not parts or len(parts) > 2:
            raise SettingsError(f"{where}: expected /<master name>[/<db>] after the hosts")
        service = unquote(parts[0])
        db = _db(parts[1], where) if len(parts) == 2 else 0
    elif parts and (len(parts) > 1 or _db(parts[0], where) != 0):
        raise SettingsError(f"{where}: Redis Cluster has only database 0")
    return Target(scheme, nodes, username, password, service, db, options)


def _host_port(text: str, where: str) -> tuple[str, int]:
    try:
        split = urlsplit(f"//{text.strip()}")
        host, port = split.hostname, split.port
    except ValueError:
        host = port = None
    if not host:
        raise SettingsError(f"{where}: {text!r} is not host:port")
    return host, port or 6379


def _db(text: str, where: str) -> int:
    if not text.isdigit():
        raise SettingsError(f"{where}: database must be a number, got {text!r}")
    return int(text)


def _tls_kwargs(target: Target) -> dict[str, Any]:
    if not target.tls:
        return {}
    out: dict[str, Any] = {"ssl": True}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
        if name in target.options:
            out[name] = target.options[name]
    if "ssl_check_hostname" in target.options:
        out["ssl_check_hostname"] = target.options["ssl_check_hostname"].lower() in (
            "1", "true", "yes", "on",
        )  # fmt: skip
    return out


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that, like BlockingConnectionPool, waits for a free
    connection (up to its timeout) instead of failing at max_connections."""


def connect(
    url: str, *, max_connections: int = 64, pool_timeout_s: float = 5.0, **common: Any
) -> Any:
    """A redis-py client for `url`: ``redis.Redis`` (one server or a Sentinel-managed
    master) or ``RedisCluster``. `common` (timeouts, retry, decode_responses…) applies
    to every connection.

    At most `max_connections` connections are open (per node on a cluster); a caller
    past that waits up to `pool_timeout_s` for one to be free. NOTE: redis-py's default
    pool fails at once past 100 connections, which a Client shared by many threads hit
    while Redis was healthy; that failure then read as "unreachable".

    A Cluster client reads the cluster's layout here, so an unreachable cluster
    raises BrokerUnavailableError (never with the password) instead of failing later.
    """
    scheme = scheme_of(url)
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url, parse(url), {**common, "max_connections": max_connections})
    pool = {"max_connections": max_connections, "timeout": pool_timeout_s}
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(parse(url), common, pool)
    client = redis.Redis(connection_pool=BlockingConnectionPool.from_url(url, **common, **pool))
    client.auto_close_connection_pool = True
    return client


def _cluster(url: str, target: Target, common: dict[str, Any]) -> RedisCluster:
    kwargs = {k: v for k, v in common.items() if k != "health_check_interval"}
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
            username=target.username,
            password=target.password,
            **_tls_kwargs(target),
            **kwargs,
        )
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        text = _scrub(str(exc), target)
        what = AUTH_FAILED if is_auth_failure(text) else "is unreachable"
        raise BrokerUnavailableError(f"Redis Cluster at {redact(url)} {what}: {text}") from exc


def _sentinel(target: Target, common: dict[str, Any], pool: dict[str, Any]) -> redis.Redis:
    tls = _tls_kwargs(target)
    # NOTE: the Sentinels' clients get our quick retry too; redis-py's default would
    # back off for seconds per Sentinel before reporting, say, a wrong password.
    sentinel_kwargs = {k: v for k, v in common.items() if k.startswith("socket_") or k == "retry"}
    sentinel_kwargs.update(
        tls,
        username=target.options.get("sentinel_username") or None,
        password=target.options.get("sentinel_password") or None,
    )
    sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs)
    client: redis.Redis = sentinel.master_for(
        target.service,
        connection_pool_class=_SentinelBlockingPool,
        db=target.db,
        username=target.username,
        password=target.password,
        **tls,
        **common,
        **pool,
    )
    return client


#: How an authentication failure reads in errors (the cause follows).
AUTH_FAILED = "refused the credentials (check the user and password in the URL)"
_AUTH_MARKS = ("NOAUTH", "WRONGPASS", "invalid username-password", "HELLO must be called",
               "Authentication required", "invalid password", "AUTH <password> called")  # fmt: skip


def is_auth_failure(text: str) -> bool:
    """Whether a server's error text says the credentials are missing or wrong."""
    return any(mark.lower() in text.lower() for mark in _AUTH_MARKS)


def sentinel_failure(url: str, text: str) -> str:
    """A short message for redis-py's MasterNotFoundError (whose text lists every
    Sentinel client's repr): which Sentinels, which master name, and why if known."""
    where = redact(url)
    if "AuthenticationError" in text or is_auth_failure(text):
        return (
            f"Redis Sentinels at {where} refused the credentials (check sentinel_username "
            "and sentinel_password in the URL)"
        )
    name = text.split("No master found for ", 1)[-1].split(" ", 1)[0] if text else "?"
    return (
        f"Redis is unreachable at {where}: no Sentinel named a master {name} "
        "(Sentinels down, or no such master name)"
    )


def _scrub(text: str, target: Target) -> str:
    """`text` with any password of `target` masked (belt and braces for error messages)."""
    for secret in (target.password, target.options.get("sentinel_password")):
        if secret:
            text = text.replace(secret, "***")
    return text


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
