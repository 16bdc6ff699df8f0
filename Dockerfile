# The llm-platform image: the Dagster code location (gRPC server for the Helm chart's user deployment, and the run
# workers the K8sRunLauncher starts) and the weights download Job (platform.platform_image in the catalog).
# No vLLM here: on Kubernetes vLLM runs in its own image (vllm/vllm-openai), in the Deployment and the benchmark Job.
#   docker build -t ghcr.io/llm-platform/llm-platform:0.1.0 .
# The base by digest, so a rebuild gets the same bytes: python:3.11-slim as published 2026-08-05 (Python 3.11.15 on
# Debian trixie; the multi-platform index recorded in docker-library/repo-info, repos/python/remote/3.11-slim.md).
# Moving to a newer base is a reviewed change: take the index digest from
#   docker buildx imagetools inspect python:3.11-slim
# (the "Digest:" line) and put it here; the tag stays beside it for readers and for `docker build` logs.
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DAGSTER_HOME=/opt/dagster/home

# tini: signals reach Python as PID 1's child. Nothing else: the downloads use the hub's HTTP API, not git.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
 && mkdir -p "$DAGSTER_HOME" && chown app "$DAGSTER_HOME"

WORKDIR /app
# Dependencies first, so that a code change does not reinstall them: exactly the versions and hashes of
# requirements.lock (`make lock` regenerates it from pyproject.toml; a test keeps the two in agreement).
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY llm_platform ./llm_platform
RUN pip install --no-deps --no-build-isolation .
COPY workspace.yaml ./

USER 10001
# The catalog is configuration, not part of the image: the Helm values mount it from a ConfigMap
# (k8s/dagster/kustomization.yaml) and set LLM_PLATFORM_CATALOG.
ENV LLM_PLATFORM_CATALOG=/etc/llm-platform/models.yaml \
    LLM_PLATFORM_TARGET=kubernetes
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "code-server", "start", "--module-name", "llm_platform.definitions", "--host", "0.0.0.0", "--port", "3030"]
