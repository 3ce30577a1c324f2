# Two images from one file:
#   docker build --target api    -t distillery-api .     # the HTTP API: no CUDA, no torch
#   docker build --target worker -t distillery-worker .  # a GPU worker: CUDA base + torch
# docker-compose.yml builds both. Both install the project's wheel, built once below: what ships
# is what pyproject.toml's [tool.setuptools] lists, nothing is copied by hand.
# tests/test_images.py rebuilds each image's files and dependencies in a virtual environment and
# runs its commands there (no Docker engine needed).

# ---------------------------------------------------------------- the project's wheel
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- api
FROM python:3.11-slim-bookworm AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DISTILLERY_HOME=/var/lib/distillery \
    DISTILLERY_EXAMPLES_DIR=/app/examples
WORKDIR /app
COPY requirements/api.txt requirements/api.txt
RUN pip install -r requirements/api.txt
COPY examples examples
COPY --from=wheel /wheels /wheels
# --no-deps: the API's dependencies are above; torch stays out of this image
RUN pip install --no-deps /wheels/distillery-*.whl && useradd --system --uid 1000 distillery \
    && mkdir -p /var/lib/distillery && chown distillery /var/lib/distillery
USER distillery
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["distill", "api", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- worker
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS worker
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DISTILLERY_HOME=/var/lib/distillery
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements/torch.txt requirements/torch.txt
RUN pip install -r requirements/torch.txt
COPY --from=wheel /wheels /wheels
RUN pip install "$(echo /wheels/distillery-*.whl)[s3]" && useradd --system --uid 1000 distillery \
    && mkdir -p /var/lib/distillery && chown distillery /var/lib/distillery
USER distillery
CMD ["distill", "worker"]
