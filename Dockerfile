# syntax=docker/dockerfile:1
# One image for every dtqs role; the command picks it:
#   docker run IMAGE                        -> dtqs api --host 0.0.0.0 --port 8080
#   docker run IMAGE worker --processes 4   -> dtqs worker …
#   docker run IMAGE scheduler              -> dtqs scheduler
# The example project (dtqs.yaml, functions/, schemas/) is baked into /app; mount or
# COPY your own over it. Build from the repository root: `docker build -t dtqs .`
# See deploy/README.md.

# Base images are pinned by digest (a tag can be re-pointed; a digest names the same
# bytes for good): python:3.11-slim-bookworm as published on Docker Hub, Python 3.11.16,
# a multi-arch index (linux/amd64 and linux/arm64). The digest was taken from public
# repositories that pin it (The-Wormhole-Suite/wormhole-observatory's Dockerfile and
# others), not resolved from the registry: check it with
# `docker buildx imagetools inspect python:3.11-slim-bookworm` when you bump it, and
# keep both stages on the same one (the venv's interpreter is the runtime's).

# --- build: dtqs and its dependencies in a venv (every one a binary wheel) ---
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the hashed lock (deploy/lock.sh writes it): the same files
# on every build, any file that differs from its hash is refused, and binary wheels
# only (no compiler here). This layer is cached until the lock changes: a change to
# dtqs's code does not reinstall them.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
# Then dtqs itself, without dependencies (all are in the lock) and built with the
# lock's setuptools rather than whatever an isolated build would fetch.
# Only what `pip install .` reads: pyproject's package-dir folders and its readme.
COPY pyproject.toml README.md ./
COPY dtqs dtqs
COPY runtime runtime
COPY api api
COPY schemas schemas
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

# --- runtime: the venv, the project, tini; no compiler, no pip cache, not root ---
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
# tini is PID 1: it forwards SIGTERM (and a second one) straight to dtqs, and reaps
# orphans. dtqs reaps only its own children, while handler code may start
# subprocesses that outlive their worker process and would otherwise pile up as
# zombies under a dtqs PID 1. Kubernetes has no `--init`, so it lives in the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 dtqs \
    && useradd --system --uid 10001 --gid dtqs --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin dtqs
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/compose/healthcheck.py /usr/local/bin/dtqs-healthcheck
WORKDIR /app
# Owned by root, read-only for dtqs: the code it runs cannot rewrite itself.
COPY dtqs.yaml ./
COPY functions functions
COPY schemas schemas
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DTQS_CONFIG=/app/dtqs.yaml \
    TINI_SUBREAPER=1
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
# Per role (read from PID 1's command line): api -> GET /healthz on its port;
# worker -> a live worker process; scheduler -> the process runs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["dtqs-healthcheck"]
# Exec form, no shell: SIGTERM goes tini -> dtqs, which stops gracefully.
ENTRYPOINT ["tini", "--", "dtqs"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
