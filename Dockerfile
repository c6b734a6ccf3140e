# syntax=docker/dockerfile:1
# The platform image: one image for every Python service of the compose stack (Airflow components,
# MLflow, Ray head and GPU worker, one-shot jobs), built from the exact versions in requirements.lock.

# The data-quality report's scripts and styles, fetched with npm in a build stage so that the image
# serves the report offline (the same script and manifest as `make install`).
FROM node:22-bookworm-slim AS report-assets
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/twin
COPY include/twin/etl/report_assets.json include/twin/etl/
COPY scripts/install_report_assets.sh scripts/
RUN bash scripts/install_report_assets.sh

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0

# git: the crawler clones repositories; curl: health checks; tini: forwards signals and reaps
# children; build-essential: DeepSpeed compiles its CPU ops on first use. No JRE is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl tini build-essential \
 && rm -rf /var/lib/apt/lists/*

# Dependencies before the source, so that a code change does not reinstall them.
# torch first: the rest of the lock resolves against it. PyPI's wheel is the CUDA build, which
# uses the GPU on the Ray GPU worker and runs on the CPU everywhere else.
WORKDIR /opt/twin
COPY requirements.lock ./
RUN pip install "$(grep -E '^torch==' requirements.lock)" \
 && pip install -r requirements.lock

# The library, installed as a package; then the folders the services read at run time.
COPY pyproject.toml README.md ./
COPY include/ include/
RUN pip install --no-deps . && rm -rf build include/*.egg-info
COPY dags/ dags/
COPY plugins/ plugins/
COPY serving/ serving/
COPY training/ training/
COPY expectations/ expectations/
COPY --from=report-assets /opt/twin/vendor/report-assets/ vendor/report-assets/

# Airflow's usual uid, group 0 (as in Airflow's own image). The folders that named volumes mount
# are created here, owned by that user, so that fresh volumes inherit the ownership.
RUN useradd --uid 50000 --gid 0 --home-dir /home/twin --create-home twin \
 && mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/twin/data \
 && chown -R twin:0 /opt/airflow /opt/twin/data

# The library is installed as a package, not from a checkout: name the project folders it reads.
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/twin/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/twin/plugins \
    TWIN_DATA_DIR=/opt/twin/data \
    TWIN_EXPECTATIONS_DIR=/opt/twin/expectations \
    TWIN_REPORT_ASSETS_DIR=/opt/twin/vendor/report-assets \
    TORCH_EXTENSIONS_DIR=/opt/twin/data/torch_extensions

USER twin
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["twin", "--help"]
