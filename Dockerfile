# Engram Cloud: one image for web, worker and beat (see Procfile and fly.toml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ENGRAM_DATA_DIR=/data \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    PORT=8000

WORKDIR /app
COPY requirements.txt requirements-deploy.txt ./
RUN pip install -r requirements.txt -r requirements-deploy.txt

COPY . .
# collectstatic needs settings but no secrets of the running service.
RUN DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app engram \
    && mkdir -p /data \
    && chown engram /data

USER engram
VOLUME ["/data"]
EXPOSE 8000
CMD ["honcho", "start", "web", "worker"]
