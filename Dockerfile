# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target runtime  -t llmservice-runtime:0.1.0 .   # GPU model server
#   docker build --target operator -t llmservice-operator:0.1.0 .  # the Kubernetes operator
# Both install the package's wheel with the exact pins of requirements/lock.txt and run as the
# non-root user 1000 (the uid the operator's pods and the Helm chart expect).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# torch's wheels bring their own CUDA libraries; the base image adds the CUDA user-space setup
# the NVIDIA container toolkit expects. The host provides the driver.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---- the package's wheel ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmservice/ llmservice/
COPY operator/ operator/
COPY runtime/ runtime/
COPY scheduler/ scheduler/
COPY kvcache/ kvcache/
COPY kernels/ kernels/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- runtime: `llmservice serve` on a GPU -----------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/lock.txt /tmp/lock.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir -c /tmp/lock.txt /tmp/dist/*.whl \
    && rm -rf /tmp/dist /tmp/lock.txt \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin llm
USER 1000:1000
WORKDIR /home/llm
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["llmservice", "serve"]

# ---- operator: `llmservice operator` (no torch) -----------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY requirements/lock.txt /tmp/lock.txt
COPY --from=wheel /dist/ /tmp/dist/
# Only what the operator imports: the package itself without its GPU dependencies.
RUN pip install --no-cache-dir -c /tmp/lock.txt kopf pydantic PyYAML aiohttp \
    && pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist /tmp/lock.txt \
    && useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin operator
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["llmservice", "operator"]
