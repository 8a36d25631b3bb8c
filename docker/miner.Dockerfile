# chutes-subnet miner: one attested E2EE inference instance. Runs INSIDE the TDX guest.
#   CPU (development, simulated TEE):
#     docker build -f docker/miner.Dockerfile -t chutes-miner:cpu .
#   CUDA (production, inside a TD with CC-mode GPUs):
#     docker build -f docker/miner.Dockerfile \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t chutes-miner:cuda .
# Run (TDX): expose configfs-tsm and the GPUs to the container, mount the wallet read-only:
#   docker run --gpus all -v /sys/kernel/config:/sys/kernel/config \
#     -v ~/.bittensor/wallets:/wallets:ro -e CHUTES_MINER_WALLET_PATH=/wallets \
#     -p 8091:8091 chutes-miner:cuda --netuid N --axon.external_ip A.B.C.D
# configfs-tsm report entries are created by root: add `--user 0` for --tee tdx.
# The image's measurement only counts if the TD's RTMRs cover it: see docs/miner.md.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CHUTES_MINER_AXON_IP=0.0.0.0 CHUTES_MINER_AXON_PORT=8091

# CUDA base images carry no Python 3.11: install it (slim images already have it).
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3.11 /usr/local/bin/python; \
    fi \
 && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# torch first and pinned, from the index matching the base image (CPU wheels or CUDA).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY setup.py README.md ./
COPY chutes_subnet ./chutes_subnet
COPY neurons ./neurons
RUN pip install ".[gpu]" && useradd --system --uid 10001 miner

USER miner
EXPOSE 8091
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8091/health', timeout=2)" || exit 1
ENTRYPOINT ["python", "neurons/miner.py"]
CMD ["--help"]
