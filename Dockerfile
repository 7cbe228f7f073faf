# syntax=docker/dockerfile:1
# The PEMT API service: FastAPI + FAISS index (or Milvus, PEMT_INDEX_BACKEND=milvus), talking to
# Triton over gRPC. No torch: the model
# runs in Triton (docker-compose.yml) or, with PEMT_BACKEND=onnx, in embedded ONNX Runtime.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# dependency layer first: only the packaging metadata, so code edits do not reinstall wheels
COPY pyproject.toml README.md ./
COPY pemt/__init__.py pemt/config.py pemt/spec.py pemt/py.typed pemt/
COPY pemt/configs pemt/configs
RUN pip install '.[serve,milvus]' && pip uninstall -y pemt
# the code (see .dockerignore for what stays out)
COPY pemt pemt
COPY server server
COPY clients clients
COPY export export
RUN pip install --no-deps '.[serve,milvus]' \
    && python -c "import server.main, sys; assert 'torch' not in sys.modules, 'torch leaked into the API image'" \
    && useradd --create-home --uid 10001 pemt \
    && mkdir -p /data && chown pemt /data

USER pemt
ENV PEMT_BACKEND=triton \
    PEMT_TRITON_URL=triton:8001 \
    PEMT_MODEL_NAME=pemt \
    PEMT_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["uvicorn", "server.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8080"]
