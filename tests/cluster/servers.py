"""Real Redis topologies for the cluster suite: a 6-node Redis Cluster, a Sentinel
group, and TLS certificates, all on free loopback ports with the system's
redis-server (``redis-server --sentinel`` is Sentinel; no separate package needed).

Every server runs with an ACL user (``USER``/``PASSWORD``) so each URL form is also
tested with credentials; the default user has its own password, so a URL without
credentials is refused.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.conftest import free_port, server_binary

USER = "dtqs"
#: Characters that must be percent-encoded in a URL, to prove they are decoded.
PASSWORD = "s3cr@t/pw"
PASSWORD_URL = "s3cr%40t%2Fpw"
ADMIN_PASSWORD = "adminpw-9f1c"
CLUSTER_NODE_TIMEOUT_MS = 1500


def acl_args() -> list[str]:
    """ACL user and passwords, plus a replica sync that starts at once (the default
    diskless sync waits 5 s for more replicas; WAIT counts only synced ones)."""
    return [
        "--repl-diskless-sync-delay", "0",
        "--requirepass", ADMIN_PASSWORD,
        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
        "--masteruser", USER, "--masterauth", PASSWORD,
    ]  # fmt: skip


def admin(port: int, **tls: object) -> redis.Redis:
    """A plain client on one node, as the ACL user (never the cluster-aware client)."""
    return redis.Redis(
        host="127.0.0.1", port=port, username=USER, password=PASSWORD,
        decode_responses=True, socket_timeout=5, **tls,  # type: ignore[arg-type]
    )  # fmt: skip


def wait_until(check: object, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
            if last:
                return last
        except (redis.exceptions.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def replica_online(info: dict[str, object]) -> bool:
    """Whether a master's INFO replication shows a replica done with its initial sync."""
    replica = info.get("slave0")
    return isinstance(replica, dict) and replica.get("state") == "online"


@dataclass
class Servers:
    """redis-server processes started for one test (or session); killed by stop()."""

    folder: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, port: int, *args: str, tls_port: bool = False) -> subprocess.Popen[bytes]:
        log = self.folder / f"redis-{port}.log"
        argv = [server_binary(), *args]
        if tls_port:
            argv += ["--port", "0", "--tls-port", str(port)]
        else:
            argv += ["--port", str(port)]
        argv += ["--bind", "127.0.0.1", "--dir", str(self.folder), "--logfile", str(log)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc
        return proc

    def restart(self, port: int) -> None:
        """Start a killed server again with its arguments (a cluster node rejoins)."""
        args = self.procs[port].args
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)  # fmt: skip

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


class Cluster(Servers):
    """Three masters and three replicas, made by ``redis-cli --cluster create``."""

    def __init__(self, folder: Path, tls: dict[str, str] | None = None) -> None:
        super().__init__(folder)
        self.tls = tls
        self.ports = [free_port() for _ in range(6)]
        # NOTE: the bus port defaults to port + 10000, which may be taken or above 65535.
        self.bus_ports = {p: free_port() for p in self.ports}

    def node_args(self, port: int) -> list[str]:
        args = [
            "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-port", str(self.bus_ports[port]),
            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS), "--save", "",
            # NOTE: a replica may always take over: a busy shared test machine can delay
            # its last contact with the master past the default validity window.
            "--cluster-replica-validity-factor", "0",
            "--appendonly", "no", *acl_args(),
        ]  # fmt: skip
        if self.tls:
            args += ["--tls-cluster", "yes", "--tls-replication", "yes", *tls_server_args(self.tls)]
        return args

    def client_tls(self) -> dict[str, object]:
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_ca_certs": self.tls["ca"]}

    def create(self) -> Cluster:
        for port in self.ports:
            self.start(port, *self.node_args(port), tls_port=bool(self.tls))
        for port in self.ports:
            wait_until(admin(port, **self.client_tls()).ping, 10, f"node {port}")
        cli = ["redis-cli", "--user", USER, "--pass", PASSWORD, "--no-auth-warning"]
        if self.tls:
            cli += ["--tls", "--cacert", self.tls["ca"]]
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [*cli, "--cluster", "create", *hosts, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(self.healthy, 30, "cluster_state:ok with 3 masters, each with a replica")
        return self

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and every master has an online replica."""
        masters = 0
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            node = admin(port, **self.client_tls())
            if node.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False
            info = node.info("replication")
            if info["role"] == "master":
                masters += 1
                if not replica_online(info):
                    return False
        return masters == 3

    def masters(self) -> list[int]:
        """Ports of the live masters."""
        out = []
        for port, proc in self.procs.items():
            if (
                proc.poll() is None
                and admin(port, **self.client_tls()).info("replication")["role"] == "master"
            ):
                out.append(port)
        return sorted(out)

    def url(self, *, scheme: str = "redis+cluster", credentials: bool = True) -> str:
        creds = f"{USER}:{PASSWORD_URL}@" if credentials else ""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        query = f"?ssl_ca_certs={self.tls['ca']}" if self.tls else ""
        return f"{scheme}://{creds}{hosts}/{query}"

    def client(self) -> RedisCluster:
        """A cluster-aware client for the test's own reads and writes."""
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports],
            username=USER, password=PASSWORD, decode_responses=True, **self.client_tls(),
        )  # fmt: skip

    def master_of(self, key: str) -> int:
        """Port of the master serving `key`'s slot (asked of the cluster itself)."""
        rc = self.client()
        try:
            node = rc.get_node_from_key(key)
            return int(node.port)
        finally:
            rc.close()


class SentinelGroup(Servers):
    """One master, one replica and three Sentinels watching them as ``MASTER``."""

    MASTER = "dtqsmaster"
    SENTINEL_PASSWORD = "sentinel-pw-77"

    def __init__(self, folder: Path, tls: dict[str, str] | None = None) -> None:
        super().__init__(folder)
        self.tls = tls
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]

    def client_tls(self) -> dict[str, object]:
        return {"ssl": True, "ssl_ca_certs": self.tls["ca"]} if self.tls else {}

    def create(self) -> SentinelGroup:
        master, replica = self.data_ports
        tls = [*tls_server_args(self.tls), "--tls-replication", "yes"] if self.tls else []
        self.start(master, "--save", "", "--appendonly", "no", *acl_args(), *tls,
                   tls_port=bool(self.tls))  # fmt: skip
        self.start(replica, "--save", "", "--appendonly", "no", *acl_args(), *tls,
                   "--replicaof", "127.0.0.1", str(master), tls_port=bool(self.tls))  # fmt: skip
        for port in self.data_ports:
            wait_until(admin(port, **self.client_tls()).ping, 10, f"redis {port}")
        wait_until(
            lambda: replica_online(admin(master, **self.client_tls()).info("replication")),
            15, "the replica to sync",
        )  # fmt: skip
        for port in self.sentinel_ports:
            conf = self.folder / f"sentinel-{port}.conf"
            listen = f"port {port}\n"
            if self.tls:
                listen = (
                    f"port 0\ntls-port {port}\ntls-cert-file {self.tls['cert']}\n"
                    f"tls-key-file {self.tls['key']}\ntls-ca-cert-file {self.tls['ca']}\n"
                    "tls-auth-clients no\ntls-replication yes\n"
                )
            conf.write_text(
                f"{listen}bind 127.0.0.1\ndir {self.folder}\n"
                f"requirepass {self.SENTINEL_PASSWORD}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {master} 2\n"
                f"sentinel auth-user {self.MASTER} {USER}\n"
                f"sentinel auth-pass {self.MASTER} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
                f"sentinel sentinel-pass {self.SENTINEL_PASSWORD}\n"
            )
            log = self.folder / f"sentinel-{port}.log"
            self.procs[port] = subprocess.Popen(
                [server_binary(), str(conf), "--sentinel", "--logfile", str(log)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        wait_until(self.sentinels_agree, 20, "three sentinels that know each other")
        return self

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.SENTINEL_PASSWORD,
                           decode_responses=True, socket_timeout=5,
                           **self.client_tls())  # type: ignore[arg-type]  # fmt: skip

    def sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            info = self.sentinel(port).sentinel_master(self.MASTER)
            if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                return False
        return True

    def master_port(self) -> int:
        """The master's port as the Sentinels report it now."""
        _, port = self.sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            self.MASTER
        )
        return int(port)

    def url(self, *, db: int = 0, sentinel_password: bool = True) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        options = [f"sentinel_password={self.SENTINEL_PASSWORD}"] if sentinel_password else []
        options += [f"ssl_ca_certs={self.tls['ca']}"] if self.tls else []
        query = "?" + "&".join(options) if options else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{USER}:{PASSWORD_URL}@{hosts}/{self.MASTER}/{db}{query}"


def make_certs(folder: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    ca_key, ca, key, csr, cert = (str(folder / n) for n in names)
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps: Sequence[list[str]] = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
         "-out", ca, "-days", "2", "-subj", "/CN=dtqs-test-ca"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", str(ext)],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(step, check=True, capture_output=True, timeout=60)
    return {"ca": ca, "cert": cert, "key": key}


def tls_server_args(certs: dict[str, str]) -> list[str]:
    return ["--tls-cert-file", certs["cert"], "--tls-key-file", certs["key"],
            "--tls-ca-cert-file", certs["ca"], "--tls-auth-clients", "no"]  # fmt: skip
