# chutes-subnet validator: attests miners, benchmarks them encrypted, sets weights, and
# (with --gateway.port) serves the E2EE gateway in the same process. No GPU, no TEE:
# it verifies evidence, it does not produce it; the embedded model's answers are
# recomputed on the CPU.
#   docker build -f docker/validator.Dockerfile -t chutes-subnet-validator .
#   docker run -d --name chutes-validator \
#       -v ~/.bittensor/wallets:/wallets:ro -v chutes-data:/data \
#       -v /path/to/policy.toml:/config/policy.toml:ro -p 127.0.0.1:9101:9101 \
#       chutes-subnet-validator --netuid N --wallet.path /wallets --wallet.name validator \
#       --policy.path /config/policy.toml --collateral.url https://pccs.example:8081 \
#       --metrics.host 0.0.0.0
#   docker exec chutes-validator chutes-subnet scores      # the score table
# The full stack (gateway on :8000 + Redis nonces) is docker-compose.yml.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CHUTES_SUBNET_HOME=/data

RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3.11 /usr/local/bin/python; \
    fi \
 && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# torch first and pinned from an explicit index (a bare "torch" would pull CUDA wheels).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY setup.py README.md ./
COPY chutes_subnet ./chutes_subnet
COPY neurons ./neurons
RUN pip install ".[redis]" \
 && useradd --system --uid 10002 validator \
 && mkdir -p /data && chown validator /data

USER validator
VOLUME ["/data"]
# 9101: GET /metrics, /scores, /health (keep it on loopback); 8000: --gateway.port
EXPOSE 9101 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/health', timeout=2)" || exit 1
ENTRYPOINT ["chutes-validator"]
CMD ["--help"]
