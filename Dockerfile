# syntax=docker/dockerfile:1.7
# fraudgen images. Two build targets share one wheel:
#   docker build --target cpu  -t registry.example.com/fraudgen:0.1.0      .   # API, CLI, Ray CPU workers
#   docker build --target cuda -t registry.example.com/fraudgen:0.1.0-cuda .   # Ray GPU workers (LLM engine)
# Both run as uid 1000 with HOME=/home/ray (what KubeRay's pod templates expect), ship `ray`, `fraudgen` and
# `wget` (KubeRay's readiness/liveness probes call it), and keep Ray at the version named in ray_cluster/*.yaml.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---- wheel: build the fraudgen wheel once; nothing from this stage but /wheels reaches an image ----------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fraudgen ./fraudgen
COPY deployments ./deployments
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- cpu: torch CPU build first (any other torch spec pulls the multi-GB CUDA build), then the package ----
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /home/ray --uid 1000 --shell /bin/bash ray
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/fraudgen-*.whl)[llm]" && rm -rf /wheels
USER 1000
WORKDIR /home/ray
EXPOSE 8000 8265 6379 10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["fraudgen", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- cuda: NVIDIA runtime base + the same CPython 3.11 + torch CUDA build + bitsandbytes (4-bit loading) ---
FROM ${PYTHON_IMAGE} AS python
FROM ${CUDA_IMAGE} AS cuda
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The Python of the slim image is self-contained under /usr/local; these are the shared libraries it links.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget ca-certificates tini libssl3t64 libffi8 \
       libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libreadline8t64 libncursesw6 libexpat1 \
    && rm -rf /var/lib/apt/lists/* \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --home-dir /home/ray --uid 1000 --shell /bin/bash ray
COPY --from=python /usr/local /usr/local
RUN ldconfig && python3 --version
RUN pip install torch==2.13.0 "bitsandbytes>=0.43"
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/fraudgen-*.whl)[llm,gpu]" && rm -rf /wheels
USER 1000
WORKDIR /home/ray
EXPOSE 8000 8265 6379 10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["fraudgen", "serve", "--host", "0.0.0.0", "--port", "8000"]
