# The dawait node image: `dawait serve` with the package and the example app (examples/).
# Build from the repository root: docker build -t dawait:0.1.0 .
# Your own app: FROM this image, COPY your module into /app, set DAWAIT_APP=module:app.

# -- build: install the package into a venv (wheels only; nothing is compiled) -----------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dawait
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY core core
COPY runtime runtime
COPY cluster cluster
COPY node node
RUN /opt/dawait/bin/pip install --no-cache-dir --only-binary=:all: . \
    && /opt/dawait/bin/python -m compileall -q /opt/dawait
COPY examples /app/examples

# -- run: the venv and the app, as a non-root user, on a read-only root filesystem -------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 dawait \
    && useradd --system --uid 10001 --gid dawait --no-create-home --shell /usr/sbin/nologin dawait
COPY --from=build /opt/dawait /opt/dawait
COPY --from=build /app /app
ENV PATH=/opt/dawait/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAWAIT_HOST=0.0.0.0 \
    DAWAIT_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# SIGTERM is dawait serve's graceful stop: no new requests, running steps finish within
# --grace-period, claims released and the lease revoked so peers take over at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dawait", "serve"]
