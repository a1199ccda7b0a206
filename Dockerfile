# Pin by digest where a registry is reachable (docs/limits.md, "Supply chain"):
#   FROM python:3.11-slim@sha256:<digest from `docker buildx imagetools inspect python:3.11-slim`>
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY cavra_ingest ./cavra_ingest
COPY workers ./workers
COPY migrations ./migrations
# Dependencies only from the lock, each checked against its hash; then the package itself without resolving.
# A fixed non-root UID/GID, so a mounted volume's ownership is the same on every host.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock && pip install --no-cache-dir --no-deps . \
    && groupadd --system --gid 10001 cavra \
    && useradd --system --uid 10001 --gid 10001 --home /data cavra \
    && mkdir -p /data && chown 10001:10001 /data

USER 10001:10001
ENV CAVRA_ACTIVITY_DB=/data/activity.db CAVRA_LOG_FORMAT=json
EXPOSE 8080
# Ready means the store is open, migrated and answering, and the server is not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# serve applies pending migrations before it listens; SIGTERM drains the writer.
CMD ["cavra-ingest", "serve", "--host", "0.0.0.0", "--port", "8080"]
