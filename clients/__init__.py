"""Clients of the PEMT service: ``clients.sdk`` (PemtClient, AsyncPemtClient over httpx),
``clients.cli`` (the ``pemt-client`` command) and ``clients.triton_client`` (Triton gRPC with
client-side decoding by pemt.media)."""
