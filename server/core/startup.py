"""Refusing to start: the lifespan raises ``StartupRefused`` when the data directory must not be
served as it is (a damaged index, one that lost acknowledged writes, an index missing beside
kept media). The message says what is wrong and what to do.

Starlette reports any lifespan failure to the ASGI server as a formatted traceback, which
uvicorn prints. ``RefusedStartMiddleware`` replaces that report with the message alone for a
``StartupRefused`` (uvicorn then prints "Application startup failed. Exiting." and exits with
status 3); any other start-up failure keeps its traceback, as a bug should.
"""

from __future__ import annotations

import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RefusedStartMiddleware", "StartupRefused"]


class StartupRefused(RuntimeError):
    """The service will not start on this data directory; ``str()`` says why and what to do."""


class RefusedStartMiddleware:
    """Pure ASGI: a ``StartupRefused`` becomes a one-message start-up failure (no traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                # Starlette sends this from inside its ``except`` block: the error is current
                exc = sys.exc_info()[1]
                if isinstance(exc, StartupRefused):
                    message = {**message, "message": f"refusing to start: {exc}"}
            await send(message)

        await self.app(scope, receive, _send)
