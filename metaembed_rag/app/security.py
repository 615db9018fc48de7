"""Request checks of the demo server, as one ASGI middleware in front of the app.

* ``Host`` must be one of ``allowed_hosts`` (the bind address, its loopback names, and any
  ``--allowed-host`` for a proxy): a page on another site that rebinds its DNS name to
  127.0.0.1 cannot talk to the demo.
* Requests that change state (``POST`` ...) must be JSON or multipart (never ``text/plain``,
  which any web page may send without asking; only a non-browser client, one sending neither
  ``Origin`` nor ``Sec-Fetch-Site``, may send no body at all), and a browser's ``Origin`` (or
  ``Sec-Fetch-Site``) must be this server itself.
* With an ``auth_token``, every request must carry it: ``Authorization: Bearer TOKEN``, or the
  cookie a visit to ``/?token=TOKEN`` sets (``HttpOnly``, ``SameSite=Strict``).
* Request bodies are limited while they stream in: a declared ``Content-Length`` over the
  limit is refused before anything is read, and a body that grows past it is cut off with 413.
* Every response carries a Content-Security-Policy, ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["SECURITY_HEADERS", "RequestGuard", "TOKEN_COOKIE", "loopback_hosts"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_COOKIE = "metaembed_token"
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
        "img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_BODY_TYPES = ("application/json", "multipart/form-data")
#: Bytes a JSON request body may have (uploads are multipart, limited separately).
JSON_BODY_LIMIT = 1 << 20


def loopback_hosts(bind_host: str) -> set[str]:
    """The ``Host`` names a server bound to ``bind_host`` answers to by default."""
    hosts = {bind_host.strip("[]").lower()}
    if bind_host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts |= {"127.0.0.1", "localhost", "::1"}
    return hosts


def _host_name(value: str) -> str:
    """``"[::1]:8000"`` -> ``"::1"``; ``"localhost:8000"`` -> ``"localhost"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """The ASGI middleware described in the module docstring.

    Args:
        app: the ASGI app to protect.
        allowed_hosts: accepted ``Host`` names (``None``: not checked; ``"*"`` in it: any).
        auth_token: the token every request must carry (``None``: no token needed).
        max_upload_bytes: the largest multipart body (an upload request).
    """

    def __init__(
        self,
        app: Any,
        *,
        allowed_hosts: Iterable[str] | None = None,
        auth_token: str | None = None,
        max_upload_bytes: int = 200 << 20,
    ) -> None:
        self.app = app
        self.allowed_hosts = (
            None if allowed_hosts is None else {_host_name(h) for h in allowed_hosts}
        )
        self.auth_token = auth_token or None
        self.max_upload_bytes = int(max_upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        extra: list[tuple[bytes, bytes]] = []

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                      if k.encode() not in present),
                    *extra,
                ]  # fmt: skip
            await send(message)

        problem = self._check(scope, headers, extra)
        if problem is not None:
            status, text = problem
            await _respond(send_secured, status, text)
            return
        method = scope["method"].upper()
        if method in _SAFE_METHODS:
            await self.app(scope, receive, send_secured)
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        limit = self.max_upload_bytes + (64 << 10) if ctype == _BODY_TYPES[1] else JSON_BODY_LIMIT
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _respond(send_secured, 413, self._too_large(limit))
            return
        received = 0
        too_large = replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # stop reading: the app sees a disconnect
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def limited_send(message: Message) -> None:
            nonlocal replaced
            if not too_large:
                await send_secured(message)
            elif message["type"] == "http.response.start" and not replaced:
                replaced = True  # whatever the app answers to the cut body: 413
                await _respond(send_secured, 413, self._too_large(limit))

        try:
            await self.app(scope, limited_receive, limited_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not replaced:
            await _respond(send_secured, 413, self._too_large(limit))

    def _too_large(self, limit: int) -> str:
        return (
            f"The request is larger than the {limit >> 20} MiB limit (serve --max-upload-mb "
            "to raise the upload limit)."
        )

    def _check(
        self, scope: Scope, headers: dict[str, str], extra: list[tuple[bytes, bytes]]
    ) -> tuple[int, str] | None:
        """``(status, message)`` for a request refused before the app sees it."""
        host = _host_name(headers.get("host", ""))
        allowed = self.allowed_hosts
        if allowed is not None and "*" not in allowed and host not in allowed:
            return 421, (
                f"Host {host!r} is not served here (allowed: "
                f"{', '.join(sorted(allowed))}; serve --allowed-host adds one)."
            )
        if self.auth_token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0]
            if given and scope["path"] == "/" and _same(given, self.auth_token):
                extra.append((
                    b"set-cookie",
                    f"{TOKEN_COOKIE}={self.auth_token}; HttpOnly; SameSite=Strict; Path=/".encode(),
                ))  # fmt: skip
            elif not self._authorised(headers):
                return 401, (
                    "This demo needs its access token: open the URL `serve` printed "
                    "(/?token=...) or send 'Authorization: Bearer TOKEN'."
                )
        if scope["method"].upper() in _SAFE_METHODS:
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        browser = "origin" in headers or "sec-fetch-site" in headers
        bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        if ctype not in _BODY_TYPES and (browser or not bodiless or ctype):
            return 415, (
                f"Content-Type {ctype or '(none)'!r} is not accepted: send JSON "
                "(application/json) or files (multipart/form-data)."
            )
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "Cross-site requests are refused."
        origin = headers.get("origin")
        if origin is not None:  # scheme://host[:port], as the Host header (same origin)
            netloc = urlsplit(origin).netloc.lower()
            if origin == "null" or netloc != headers.get("host", "").strip().lower():
                return 403, f"Requests from {origin} are refused (only this page may post here)."
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.auth_token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), self.auth_token):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and _same(value, self.auth_token):
                return True
        return False


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def _respond(send: Send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
