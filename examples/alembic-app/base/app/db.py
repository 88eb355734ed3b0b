"""The database connection, shared by the app and by the migrations (`migrations/env.py`)."""

import os
import threading

from sqlalchemy import Engine, create_engine

_engine = None
_engine_lock = threading.Lock()


def database_url() -> str:
    """The SQLAlchemy URL from `$DATABASE_URL`; raises RuntimeError when it is not set."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise RuntimeError(
            "DATABASE_URL is not set; export it, e.g. postgresql://user@127.0.0.1:5432/app"
        )
    # libpq and most tools write postgres://, which SQLAlchemy no longer accepts.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return url


def engine() -> Engine:
    """The process-wide engine, created on first use so importing the app needs no database."""
    global _engine
    with _engine_lock:
        if _engine is None:
            url = database_url()
            # A short connect timeout keeps /health answering (with 503) when the server is down,
            # instead of hanging until the prober gives up.
            connect_args = {"connect_timeout": 3} if url.startswith("postgresql") else {}
            _engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        return _engine
