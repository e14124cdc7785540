"""Errors as the server answers them: one `ErrorResponse` shape (OpenAI's), for every status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .protocol import ErrorInfo, ErrorResponse


class APIError(Exception):
    """An error answered as OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorInfo(message=message, type=type, param=None, code=code)).model_dump()


def error_response(status: int, message: str, type: str = "invalid_request_error", code=None, headers=None):
    return JSONResponse(error_body(message, type, code), status_code=status, headers=headers)


def internal_error_message(request_id: str) -> str:
    # Exception text can hold file paths, device and driver details: it goes to the server log, not to clients.
    return f"Internal server error (request {request_id}): the server log has the details."


# The errors every `/v1` route may answer, shown with their shape in the OpenAPI schema (`/docs`).
ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request: the message says which field to fix."),
        (401, "Missing or wrong API key."),
        (404, "Unknown model."),
        (413, "Request body too large."),
        (500, "Internal error: the message gives the request id to find in the server log."),
        (503, "Queue full: retry after the `Retry-After` seconds."),
    )
}
