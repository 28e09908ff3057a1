"""ASGI middleware for vLLM's OpenAI-compatible server: every request needs the server's API key.

vLLM's own key check (`--api-key`, `VLLM_API_KEY`) guards only the /v1, /v2, /inference and /cohere
paths; others, such as /invocations, answer chat requests without it. The built-in deployment
notebook adds this class (`--middleware key_guard.KeyOnEveryPath`, with this folder on the server's
PYTHONPATH). It reads the key from `VLLM_API_KEY` in the server's environment; without one it
serves nothing. Only `GET /health` stays open: it says "up" and nothing more.
"""

import hashlib
import hmac
import os

OPEN_PATHS = frozenset({"/health"})


class KeyOnEveryPath:
    """Answer 401 to any request without `Authorization: Bearer <VLLM_API_KEY>`."""

    def __init__(self, app):
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        self._digest = hashlib.sha256(key.encode()).digest() if key else None

    def _authorised(self, scope) -> bool:
        if self._digest is None:
            return False
        for name, value in scope.get("headers") or []:
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                given = hashlib.sha256(token.strip().encode("latin-1")).digest()
                return scheme.lower() == "bearer" and hmac.compare_digest(given, self._digest)
        return False

    async def __call__(self, scope, receive, send):
        open_path = scope.get("path") in OPEN_PATHS and scope.get("method") in ("GET", "HEAD")
        if scope["type"] not in ("http", "websocket") or open_path or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # the connect message, then refuse it
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b'{"error": "Unauthorized"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
