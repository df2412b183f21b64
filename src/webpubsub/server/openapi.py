"""The OpenAPI 3 document of the REST API, served at ``GET /api/openapi.json``.

The document (``openapi.json`` beside this module) describes every route of
:data:`webpubsub.server.rest.ROUTES`, its parameters, bodies, status codes and error
bodies; ``tests/hardening/test_openapi.py`` keeps it true to the route table and fuzzes the
running service against it. It needs no authentication: it holds no secrets.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .app import Service

PATH = "/api/openapi.json"


@cache
def document_bytes() -> bytes:
    """The document as shipped (UTF-8 JSON)."""
    return resources.files("webpubsub.server").joinpath("openapi.json").read_bytes()


def document() -> dict[str, Any]:
    """The document, parsed (a fresh copy each call)."""
    parsed: dict[str, Any] = json.loads(document_bytes())
    return parsed


async def page(request: HttpRequest) -> HttpResponse:
    """``GET``/``HEAD /api/openapi.json``."""
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse.json(
            405, {"code": "Error.MethodNotAllowed", "message": "Use GET or HEAD."}
        )
        response.headers += [("x-ms-error-code", "Error.MethodNotAllowed"), ("Allow", "GET, HEAD")]
        return response
    return HttpResponse(200, document_bytes(), content_type="application/json; charset=utf-8")


def install(service: Service) -> None:
    """Serve the document on ``service`` at :data:`PATH`."""
    service.pages[PATH] = page
