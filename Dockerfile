# killboard as a container: `docker compose up` (compose.yaml), or
#   docker build -t killboard . && docker run -p 8080:8080 -v killboard-data:/data killboard
# Settings are the KILLBOARD_* environment variables (docs/install.md); the database lives on /data.

# -- build: the wheel, from the same pyproject.toml as `pip install .` -----------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY killboard ./killboard
COPY data ./data
COPY templates ./templates
COPY static ./static
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- run: the wheel and its pinned dependencies, no compiler, no build tree -----------------------
FROM python:3.11-slim
COPY requirements.txt /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --constraint /tmp/requirements.txt /tmp/wheels/*.whl \
    && rm -r /tmp/wheels /tmp/requirements.txt \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home killboard \
    && mkdir /data && chown killboard:killboard /data
USER killboard
WORKDIR /data
VOLUME /data
# 0.0.0.0: reachable through the published port (the compose scale profile puts it back on
# 127.0.0.1 behind nginx). PYTHONUNBUFFERED: log lines reach `docker logs` as they are written.
ENV KILLBOARD_HOST=0.0.0.0 \
    KILLBOARD_PORT=8080 \
    KILLBOARD_DB=/data/killboard.sqlite3 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
# No curl in the slim image: Python asks /health on the port this container serves (writer or edge).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KILLBOARD_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["killboard"]
