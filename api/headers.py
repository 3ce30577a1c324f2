"""Security headers on every response.

The dashboard's page and files get a Content-Security-Policy that allows the service's own
scripts, styles and API only: no inline script or style, no other origin, no framing (so a
script injected through a job's name could not run, and the page cannot be clickjacked). API
answers are data, never a document: nothing may load from them. The interactive API docs
(``/docs``, ``/redoc``) are FastAPI's pages, which load Swagger's scripts from a CDN, so they get
only the headers that do not break them.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS = ("/docs", "/redoc")
ALWAYS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def policy_for(path: str) -> str | None:
    if path.startswith(DOCS):
        return None
    if path == "/" or path.startswith("/ui/"):
        return DASHBOARD_CSP
    return API_CSP


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = policy_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers.setdefault(name, value)
                if policy is not None:
                    headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)
