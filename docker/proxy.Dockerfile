# Local E2EE proxy: a plaintext OpenAI-compatible API that forwards encrypted.
#   docker build -f docker/proxy.Dockerfile -t chutes-e2ee-proxy .
#   docker run --rm --network host -e CHUTES_API_KEY=csk_... chutes-e2ee-proxy \
#       --upstream https://gateway.example
# With --network host the default --listen 127.0.0.1:8787 stays on loopback. With a
# bridge network pass --listen 0.0.0.0:8787 and publish only to loopback:
#   docker run -p 127.0.0.1:8787:8787 ... --listen 0.0.0.0:8787 --upstream URL
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY setup.py README.md ./
COPY chutes_subnet ./chutes_subnet
# The proxy needs only the client side; skip the heavy miner/validator dependencies
# (torch, bittensor) by installing the package without deps. dcap-qvl stays: the proxy
# verifies every instance's TDX quote itself before it encrypts to its key.
RUN pip install --no-deps . \
 && pip install "httpx>=0.27,<1" "starlette>=0.37" "uvicorn[standard]>=0.29,<1" \
        "pydantic>=2.6,<3" "cryptography>=44" "pqcrypto>=1.0,<2" "isal>=1.6" \
        "dcap-qvl>=0.7,<0.8" "prometheus-client>=0.20" \
 && useradd --system --uid 10001 proxy

USER proxy
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8787/health', timeout=2)" || exit 1
ENTRYPOINT ["python", "-m", "chutes_subnet.client", "proxy"]
CMD ["--help"]
