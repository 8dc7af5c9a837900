"""OpenAI-format error responses."""

from __future__ import annotations

from fastapi.responses import JSONResponse

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "BadRequestError",
          413: "BadRequestError", 422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
          503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error to return to the client as ``{"error": {...}}`` with ``status``."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "BadRequestError"), "param": param,
                      "code": code if code is not None else status}}


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.status, e.param, e.code), status_code=e.status, headers=e.headers)
