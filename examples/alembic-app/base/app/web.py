"""Just enough HTTP on top of WSGI for a JSON API: a request wrapper, errors, responses."""

import json
from http import HTTPStatus

# Bodies are small JSON documents; anything bigger is a client mistake, not data to buffer.
MAX_BODY = 1 << 20


class HTTPError(Exception):
    """Raised by a handler to answer with `status` and a JSON error body."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Request:
    def __init__(self, environ):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "/") or "/"

    def json(self) -> dict:
        """The body parsed as a JSON object; 400 when it is missing or malformed."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HTTPError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HTTPError(413, f"body larger than {MAX_BODY} bytes")
        raw = self.environ["wsgi.input"].read(length) if length else b""
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "body must be a JSON object")
        return data


def respond(start_response, status: int, body) -> list:
    payload = json.dumps(body, default=str).encode() + b"\n"
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
