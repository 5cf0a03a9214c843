# clearout-gateway container image.
#
# Two stages: `builder` installs the package and its dependencies into a
# virtualenv (with a compiler at hand for any dependency that ships no wheel
# for the target platform); the final stage copies only that virtualenv onto a
# fresh slim base, so no compiler, header or pip cache reaches production.
# Both stages must use the same base image: the venv's interpreter is a
# symlink to the base image's Python.

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src

# Dependencies first, at the exact versions and hashes of the lock file
# (pip-compile of pyproject.toml), so a rebuild installs the same bytes and
# editing the gateway's code does not invalidate this (slow) layer.
COPY pyproject.toml requirements.lock ./
RUN pip install --require-hashes --no-deps --requirement requirements.lock

# Then the gateway itself (not editable: the final image has no source tree).
COPY README.md ./
COPY gateway ./gateway
RUN pip install --no-deps . \
 && python -c "import gateway.cli"


FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="clearout-gateway" \
      org.opencontainers.image.description="Caching reverse proxy in front of the Clearout Email Finder API v2"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it and the
# Helm chart's securityContext (runAsUser 10001) matches the image.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv

# Bulk uploads are spooled to /tmp (GATEWAY_SPOOL_DIR); in Kubernetes an
# emptyDir is mounted there so the root filesystem can stay read-only.
USER 10001:10001

EXPOSE 8080

# No curl in slim images: ask Python. It follows GATEWAY_PORT, and bypasses
# any HTTP(S)_PROXY set for upstream egress; a non-2xx answer raises, so the
# exit status is non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=3)"]

ENTRYPOINT ["clearout-gateway"]
CMD ["serve"]
