# The cti daemon. Build from the repository root:
#   docker compose -f docker/docker-compose.yml build cti
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A system user with no shell and no password: the daemon needs no privilege at all.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/cti --create-home \
        --shell /usr/sbin/nologin cti

COPY pyproject.toml README.md /tmp/cti-src/
COPY src /tmp/cti-src/src
RUN pip install /tmp/cti-src && rm -rf /tmp/cti-src

COPY docker/cti.toml /etc/cti/cti.toml
WORKDIR /var/lib/cti
USER cti
EXPOSE 8080

# No curl in the slim image: the standard library asks /healthz (200 = AMI link and database up).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

ENTRYPOINT ["cti"]
CMD ["serve", "--config", "/etc/cti/cti.toml"]
