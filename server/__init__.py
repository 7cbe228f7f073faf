"""PEMT HTTP service (FastAPI; no torch): upload a video, get window embeddings, search and
classify against a durable FAISS + SQLite index (one process) or a Milvus collection (any
number of replicas).

Run: ``uvicorn server.main:create_app --factory`` (settings from ``PEMT_*`` variables, see
``server.core.config.Settings``). Layout: ``main.py`` (app factory + lifespan), ``api/`` (routes,
dependencies, schemas), ``core/`` (settings, errors, uploads, decoding, pipeline, metrics),
``backends/`` (ONNX Runtime, Triton), ``index/`` (vector index: FAISS store, Milvus),
``testing.py`` (run the real server, and milvus-lite's server, in subprocesses for tests and
benchmarks).
"""
