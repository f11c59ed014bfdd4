# The newsletter image: one image for every process (web, worker, beat, migrate); docker-compose.yml picks
# the command. Default: the web app on port 8000.
#   docker build -t topic-newsletter .
#   docker run --rm -e NEWSLETTER_SECRET_KEY=... -p 8000:8000 topic-newsletter

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the package build needs (pyproject.toml's wheel target force-includes templates/).
COPY pyproject.toml README.md ./
COPY subscriptions ./subscriptions
COPY mail ./mail
COPY worker ./worker
COPY templates ./templates
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    NEWSLETTER_ENVIRONMENT=production
RUN groupadd --system --gid 10001 newsletter \
    && useradd --system --uid 10001 --gid newsletter --home-dir /app --shell /usr/sbin/nologin newsletter \
    && mkdir -p /app/var/outbox \
    && chown -R newsletter:newsletter /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# var/ holds the outbox (outbox:// email URL) and anything else the app writes; mount a volume here.
VOLUME ["/app/var"]
USER newsletter
EXPOSE 8000
CMD ["newsletter", "web", "--host", "0.0.0.0", "--port", "8000"]
