"""How big each measurement is: the full run, and the --quick run CI uses."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Think time between latency samples, seconds (drawn from U[0, this]).
THINK_MAX_S = 0.1
#: arq polls every 0.5 s by default: its think time spans the poll period, so samples
#: are spread over the poller's phase instead of locked to it.
ARQ_THINK_MAX_S = 0.5


@dataclass(frozen=True)
class Plan:
    quick: bool
    runs: int  #: each figure is the median over this many runs
    n: int  #: tasks per enqueue and per drain
    #: per library, a smaller N for the slow drains (their rate is steady, start-up ~0.2 s)
    n_caps: dict[str, int] = field(default_factory=dict)
    latency_samples: int = 500
    latency_warmup: int = 10
    arq_latency_samples: int = 100  #: arq samples take 0.5 s each (see ARQ_THINK_MAX_S)
    http_duration_s: float = 10.0
    http_connections: int = 32
    http_batch: int = 100  #: tasks per POST /v1/tasks/batch
    redis_benchmark_requests: int = 200_000
    drain_limit_s: float = 300.0  #: a drain not done by then is reported as incomplete

    def n_for(self, lib: str) -> int:
        return min(self.n, self.n_caps.get(lib, self.n))

    def samples_for(self, lib: str) -> int:
        return self.arq_latency_samples if lib == "arq" else self.latency_samples

    def think_for(self, lib: str) -> float:
        return ARQ_THINK_MAX_S if lib == "arq" else THINK_MAX_S


FULL = Plan(quick=False, runs=3, n=20_000, n_caps={"rq": 10_000, "arq": 5_000})
QUICK = Plan(
    quick=True,
    runs=1,
    n=1000,
    latency_samples=50,
    latency_warmup=3,
    arq_latency_samples=10,
    http_duration_s=2.0,
    redis_benchmark_requests=20_000,
    drain_limit_s=60.0,
)
