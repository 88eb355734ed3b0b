"""Serves the app on 127.0.0.1:$PORT (default 8000) with the standard library's WSGI server.

Run as `python -m app` with `DATABASE_URL` set. `bin/restart` is what starts it in a deploy.
"""

import os
import signal
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from app import application, db


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow request (say, one waiting on a migration's lock)
    does not stall the health probe behind it."""

    daemon_threads = True


class LogHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        # The default format includes the client address, which is always 127.0.0.1 here.
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))


def _stop(signum, frame):
    # Turned into KeyboardInterrupt so serve_forever() returns and the socket is closed cleanly.
    raise KeyboardInterrupt


def main() -> int:
    try:
        port = int(os.environ.get("PORT", "8000"))
        db.database_url()
    except ValueError:
        print(f"app: PORT must be a number, got {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"app: {exc}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _stop)
    try:
        server = make_server(
            "127.0.0.1",
            port,
            application,
            server_class=ThreadingWSGIServer,
            handler_class=LogHandler,
        )
    except OSError as exc:
        print(f"app: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    with server:
        print(f"app: serving on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    print("app: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
