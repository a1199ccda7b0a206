# Pin by digest where a registry is reachable (docs/limits.md, "Supply chain"):
#   FROM python:3.11-slim@sha256:<digest from `docker buildx imagetools inspect python:3.11-slim`>
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY cavra_ingest ./cavra_ingest
COPY workers ./workers
COPY migrations ./migrations
# Dependencies only from the lock, each checked against its hash; then the package itself without resolving.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock && pip install --no-cache-dir --no-deps . \
    && useradd --system --home /data cavra && mkdir -p /data && chown cavra /data

USER cavra
ENV CAVRA_ACTIVITY_DB=/data/activity.db
EXPOSE 8080
# serve applies pending migrations before it listens; SIGTERM drains the writer.
CMD ["cavra-ingest", "serve", "--host", "0.0.0.0", "--port", "8080"]
