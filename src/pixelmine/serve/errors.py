"""Library errors -> HTTP answers. Every answer is JSON ``{"error": message, "code": short_name}``; the
message is the library's own (what is wrong and what to do). Unexpected errors are logged with an id and
answered with that id only, never with a traceback or internal detail."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..corrections import ImageNotFoundError
from ..errors import InputError, MissingDependencyError, NotFittedError, PixelmineError, WorkspaceError
from ..uploads import UploadError

log = logging.getLogger("pixelmine.serve")

_UPLOAD_STATUS = {"too_large": 413, "not_an_image": 415, "unsupported_format": 415}


def error_response(status: int, message: str, code: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def status_of(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, UploadError):
        return _UPLOAD_STATUS.get(exc.status, 422), exc.status
    if isinstance(exc, ImageNotFoundError):
        return 404, "not_found"
    if isinstance(exc, NotFittedError):
        return 409, "not_ready"
    if isinstance(exc, InputError):
        return 422, "bad_input"
    if isinstance(exc, (MissingDependencyError, ImportError)):
        return 503, "unavailable"
    if isinstance(exc, WorkspaceError):
        return 503, "workspace_unavailable"
    return 500, "internal_error"


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        if error.get("type") == "missing" and "file" in where:
            parts.append("no file: send multipart/form-data with one or more image parts named 'file'")
        else:
            parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    log.debug("validation errors: %s", exc.errors())
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(PixelmineError)
    async def _library_error(request: Request, exc: PixelmineError):
        status, code = status_of(exc)
        if status >= 500:
            return _internal(request, exc) if status == 500 else error_response(status, str(exc), code)
        return error_response(status, str(exc), code)

    @app.exception_handler(ImportError)
    async def _missing(request: Request, exc: ImportError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(503, f"this feature is not available in this installation ({exc.name or exc}); "
                                   "install everything with: pip install 'pixelmine[ml,serve]'", "unavailable")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(422, _describe_validation(exc), "bad_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs for the API"
        return error_response(exc.status_code, message, "http_error", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _internal(request, exc)


def _internal(request: Request, exc: BaseException) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error (incident {incident}); the details are in the server log",
                          "internal_error")
