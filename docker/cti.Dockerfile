# The cti daemon for the compose lab, installed from this repository. Built by docker/build-images,
# which assembles the context (build/lab/cti/): wheels/ holds cti's own wheel, built from src/, and
# its dependencies' wheels for this image's Python; nothing is fetched during the build.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/cti/bin:$PATH

# Debian's Python 3.11; tzdata for the calling hours' and statistics' time zones.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/cti --create-home \
        --shell /usr/sbin/nologin cti

COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/cti \
    && /opt/cti/bin/pip install -q --no-index --find-links /tmp/wheels cti \
    && rm -rf /tmp/wheels \
    && cti --help >/dev/null

COPY cti.toml /etc/cti/cti.toml
WORKDIR /var/lib/cti
# A system user with no shell and no password: the daemon needs no privilege at all.
USER cti

# Healthy once /readyz says ready: the database answers (a background probe), the AMI links this
# node should hold are up and resynchronised. A 503 (urlopen raises) counts as unhealthy too.
HEALTHCHECK --interval=3s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import json, os, sys, urllib.request as u; r = u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CTI_WEB_PORT', '8080'), timeout=3); sys.exit(json.load(r).get('status') != 'ready')"]

ENTRYPOINT ["cti"]
CMD ["serve", "--config", "/etc/cti/cti.toml"]
