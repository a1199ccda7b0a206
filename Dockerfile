FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cavra_ingest ./cavra_ingest
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /data cavra && mkdir -p /data && chown cavra /data

USER cavra
ENV CAVRA_ACTIVITY_DB=/data/activity.db
EXPOSE 8080
# serve applies pending migrations before it listens; SIGTERM drains the writer.
CMD ["cavra-ingest", "serve", "--host", "0.0.0.0", "--port", "8080"]
