"""Plain ASGI middleware of the front end: API-key authentication and the request-body limit.

Plain ASGI on purpose: Starlette's ``BaseHTTPMiddleware`` re-streams every SSE chunk
through extra tasks and cost ~30% of the front end's CPU under 64 streams.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse

from seallm.server.errors import error_body


class APIKeyMiddleware:
    """Require ``Authorization: Bearer KEY`` on ``/v1`` routes (401 in OpenAI format otherwise).

    The scheme is matched case-insensitively (RFC 7235); the key is compared in constant
    time (``hmac.compare_digest``).
    """

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    def _authorized(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, token = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            if not self._authorized(auth):
                resp = JSONResponse(error_body("invalid or missing API key", 401), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 (OpenAI error format).

    A declared ``Content-Length`` over the limit is refused before the body is read; a
    chunked body is counted as it arrives and refused once it passes the limit, so no more
    than ``max_bytes`` of one request is ever held in memory.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope, receive, send) -> None:
        msg = f"the request body exceeds this server's limit of {self.max_bytes} bytes (max_request_body)"
        await JSONResponse(error_body(msg, 413), status_code=413, headers={"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed header itself
            if too_big:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the body here, counting, then replay it.
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # disconnected
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
