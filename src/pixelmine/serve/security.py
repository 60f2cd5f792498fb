"""Who may write, and how much a request may send.

- Writing endpoints need the server's token, sent as ``Authorization: Bearer <token>`` or
  ``X-Pixelmine-Token: <token>``. A token in a header (never a cookie) also means another web site open in
  the same browser cannot make the user's browser write (no CSRF).
- :class:`BodyLimit` refuses a request body above the limit with 413 before it is parsed, whether the
  client declared its length or streams it in chunks.
"""

from __future__ import annotations

import hmac
import asyncio
import json
import os
import secrets

ENV_TOKEN = "PIXELMINE_TOKEN"


def resolve_token(token: str | None) -> tuple[str, bool]:
    """(token, generated): the given token, else $PIXELMINE_TOKEN, else a new random one."""
    token = token or os.environ.get(ENV_TOKEN)
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def token_matches(expected: str, authorization: str | None, header_token: str | None) -> bool | None:
    """True / False for a presented token; None when no token was presented at all."""
    presented = header_token
    if presented is None and authorization:
        scheme, _, value = authorization.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else None
    if not presented:
        return None
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8"))


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets 413 with a JSON message, and one that
    stalls (no byte for ``stall_s`` seconds before it is complete, a slow-loris client) gets 408, so a
    trickling client cannot hold a connection and its buffers forever."""

    def __init__(self, app, max_bytes: int, stall_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.stall_s = stall_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._refuse(send, int(declared))
        received = 0
        exceeded = False
        stalled = False
        refused = False
        complete = False  # once the whole body is in, receive() waits for a disconnect: no timeout then

        async def limited_receive():
            nonlocal received, exceeded, stalled, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=self.stall_s)
            except asyncio.TimeoutError:
                stalled = True
                raise _TooLarge() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            # Frameworks turn an error raised while reading the body into their own answer (FastAPI: 400
            # "error parsing the body"); once the limit was crossed, that answer is replaced by the 413.
            nonlocal refused
            if exceeded or stalled:
                if not refused and message["type"] == "http.response.start":
                    refused = True
                    await (self._refuse(send, received) if exceeded else self._stalled(send, received))
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not refused:
                refused = True
                await (self._refuse(send, received) if exceeded else self._stalled(send, received))

    async def _stalled(self, send, size: int) -> None:
        body = json.dumps({"error": f"the request body stopped arriving for {self.stall_s:g} s after {size:,} "
                                    "bytes; send it again, in one go", "code": "body_stalled"}).encode()
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"error": f"the request body ({size:,} bytes or more) is above the limit of "
                                    f"{self.max_bytes:,} bytes; send fewer or smaller files",
                           "code": "too_large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
