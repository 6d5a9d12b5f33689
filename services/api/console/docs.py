"""Swagger UI at /docs and ReDoc at /redoc, working offline.

Their JavaScript and CSS come from the `fastapi-offline` package's files and are served by the
app under /console/vendor, so the pages fetch nothing from any other host.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR_URL: Final = "/console/vendor"
# The pages' own inline bootstrap script is allowed; anything from another host is not. This
# also stops the one picture ReDoc would fetch from its vendor's site (it then hides it).
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


def vendor_dir() -> Path:
    """The directory of the Swagger UI and ReDoc distribution files shipped by the package."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI, title: str, openapi_url: str = "/openapi.json") -> None:
    """Serve the vendored assets and the two documentation pages."""
    app.mount(VENDOR_URL, StaticFiles(directory=vendor_dir()), name="console-vendor")
    router = APIRouter(include_in_schema=False)

    @router.get("/docs", response_class=HTMLResponse)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR_URL}/favicon.png",
            # Swagger UI would otherwise ask an outside validator for a badge on public hosts.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @router.get("/redoc", response_class=HTMLResponse)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            redoc_js_url=f"{VENDOR_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{VENDOR_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.include_router(router)
