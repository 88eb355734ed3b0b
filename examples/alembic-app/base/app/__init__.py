"""A small user-and-notes service: the example app the deploy host migrates, restarts and probes.

`application` is a plain WSGI callable, so serving needs nothing beyond the standard library
(see `__main__.py`). The package is split so that revisions of the example repository only
touch what a real change would touch: `models` and `views` grow with each revision, `health`
is the probe the host verifies against, and `db` and `web` are plumbing shared by all.
"""

import sys
import traceback

from app import health, views
from app.web import HTTPError, Request, respond

ROUTES = {("GET", "/health"): health.health, **views.ROUTES}


def application(environ, start_response):
    """Dispatches one request to the handler registered for its method and path."""
    request = Request(environ)
    handler = ROUTES.get((request.method, request.path))
    try:
        if handler is None:
            if any(path == request.path for _, path in ROUTES):
                raise HTTPError(405, f"{request.method} is not allowed on {request.path}")
            raise HTTPError(404, f"no route for {request.path}")
        status, body = handler(request)
    except HTTPError as exc:
        status, body = exc.status, {"status": "error", "detail": exc.detail}
    except Exception:
        # The traceback goes to the app log (.run/app.log); the client gets no internals.
        traceback.print_exc(file=sys.stderr)
        status, body = 500, {"status": "error", "detail": "internal error, see the app log"}
    return respond(start_response, status, body)
