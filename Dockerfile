# syntax=docker/dockerfile:1
#
# One image for every sluice process:
#   sluice run api | executor | scheduler | kafka-listener | storage-listener
#   sluice migrate
# Build: docker build -t sluice:dev .   (no secrets go into the image; all configuration is read
# from the environment at run time, see docs/kubernetes.md).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with sluice and its runtime dependencies (no embedded/dev extras) ---
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/sluice

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services

# pip compiles the installed modules to bytecode here: the runtime root filesystem is read-only.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/sluice/bin/pip install . \
 && /opt/sluice/bin/pip check

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Event-driven workflow orchestrator: Kafka, S3/MinIO, cron and API triggers into prioritized DAG runs" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini as PID 1 forwards SIGTERM to sluice (which drains) and reaps the orphaned descendants of
# node processes, which a Python PID 1 would leave as zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 sluice \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /home/sluice --create-home --shell /bin/bash sluice

# The user node processes run as when the executor itself runs as root (an image run with
# `--user 0`): it cannot read the executor's /proc files, memory or environment
# (docs/node-sandbox.md). Under the default USER below nodes share uid 10001, and the executor
# being non-dumpable is what keeps them out. /opt/sluice/bin/python must stay readable by it.
RUN groupadd --system --gid 10002 sluice-node \
 && useradd --system --no-log-init --uid 10002 --gid 10002 \
        --home-dir /home/sluice-node --create-home --shell /usr/sbin/nologin sluice-node

COPY --from=build /opt/sluice /opt/sluice

ENV PATH=/opt/sluice/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/sluice \
    TMPDIR=/tmp \
    SLUICE_LOG_FORMAT=json \
    SLUICE_NODE_USER=sluice-node

# Shell nodes run under bash: fail the build if the base image ever loses it, prove that the
# entry point starts without the development extras and that the node user can run python.
RUN bash --version >/dev/null \
 && sluice --help >/dev/null \
 && su -s /bin/sh sluice-node -c '/opt/sluice/bin/python -I -c pass'

# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
WORKDIR /home/sluice

# 8080 API, 8081 S3 webhook (storage-listener), 9090 health/readiness/metrics (every process).
EXPOSE 8080 8081 9090

ENTRYPOINT ["tini", "--", "sluice"]
CMD ["run", "api"]
