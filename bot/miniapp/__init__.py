"""The desk as a Telegram Mini App, served by the desk itself on the /health server.

- /app/            the pages (static/: plain HTML, CSS and JS, uPlot vendored with its licence; no CDN,
                   no build step); they carry no data and need no login
- /api/...         the JSON API (api.py), every call authorized by Telegram's signed initData (initdata.py)
- /api/openapi.yaml  the API's description

Telegram opens it from the bot's menu button and from a button under /status (bot/telegram), at
PUBLIC_URL (or the webhook's host) + /app/. The Mini App exists only with a bot token: initData is
signed with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from bot.miniapp.api import MiniAppApi
from core.desk import Desk, Role

STATIC = Path(__file__).parent / "static"
OPENAPI = Path(__file__).parent / "openapi.yaml"
# the pages load only their own files and talk only to their own API; Telegram's web client frames them
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'self' https://web.telegram.org",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def _to_index(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/app/")


async def _openapi(request: web.Request) -> web.FileResponse:
    return web.FileResponse(OPENAPI, headers={"Content-Type": "application/yaml"})


@web.middleware
async def _headers(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)  # type: ignore[misc]
    if request.path.startswith("/app/"):
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
    return response


def mount_miniapp(app: web.Application, desk: Desk, token: str, role_of: Callable[[int], Role | None],
                  max_age_s: float) -> MiniAppApi:
    """Add /app and /api to the host's aiohttp application (before it starts)."""
    api = MiniAppApi(desk, token, role_of, max_age_s)
    app.router.add_get("/app", _to_index)
    app.router.add_get("/app/", _index)
    app.router.add_static("/app/static/", STATIC, append_version=False)
    app.router.add_get("/api/openapi.yaml", _openapi)
    app.middlewares.append(_headers)
    app.add_subapp("/api/", api.app())
    return api


__all__ = ["MiniAppApi", "mount_miniapp"]
