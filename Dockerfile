# clearout-gateway container image.
#
# Two stages: `builder` installs the package and its exact locked dependencies
# into a virtualenv; the final stage copies only that virtualenv onto a fresh
# copy of the same base, so no pip, build tool or cache reaches production.
# Every runtime dependency ships a manylinux wheel for CPython 3.11, so the
# builder needs no compiler either (a dependency that starts needing one fails
# the build instead of quietly compiling).
#
# BASE_IMAGE is the official Python image by default. Any Debian-like image
# with `python3` (and its venv module), `groupadd`/`useradd` and a CA bundle
# at /etc/ssl/certs/ca-certificates.crt works too: the CI builds on a
# debootstrapped Debian bookworm (tests/test_container.py, .ci/base-image.sh)
# because it cannot pull from Docker Hub. Both stages must use the same base:
# the venv's interpreter is a symlink to the base image's Python
# (/usr/local/bin/python3 in the official image, /usr/bin/python3 in Debian's).
#
# Build:  docker build -t clearout-gateway:0.1.0 .
# Behind a TLS-inspecting proxy, mount its CA bundle over the image's for the
# build (pip reads it through PIP_CERT below), e.g. with podman:
#   podman build --format docker \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro .
# HTTP_PROXY/HTTPS_PROXY/NO_PROXY are predefined build arguments: pass them
# with --build-arg; they are not recorded in the image.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src

# Dependencies first, at the exact versions and hashes of the lock files
# (`uv pip compile --universal` of pyproject.toml: its markers pick, say, the
# async-timeout backport redis needs on Debian's 3.11.2), wheels only, so a
# rebuild installs the same bytes and editing the gateway's code does not
# invalidate this layer.  The build backend is locked too
# (requirements-build.lock), and used without build isolation.
COPY pyproject.toml requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --no-deps --only-binary=:all: --compile \
        --requirement requirements.lock --requirement requirements-build.lock

# Then the gateway itself (not editable: the final image has no source tree).
# Byte code is compiled here, since the read-only root cannot cache it at run
# time; pip and setuptools then leave the venv: nothing installs at run time.
COPY README.md ./
COPY gateway ./gateway
RUN pip install --no-deps --no-build-isolation --compile . \
 && pip check \
 && python3 -c "import gateway.cli" \
 && pip uninstall --yes pip setuptools


FROM ${BASE_IMAGE} AS runtime

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
    CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=3)"]

ENTRYPOINT ["clearout-gateway"]
CMD ["serve"]
