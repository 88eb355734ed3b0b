"""`GET /health`: the probe the deploy host verifies a release with.

It answers 200 only when the database answers, and reports the migration revision the
database is at, so a verifier can check that code and schema moved together.
"""

from sqlalchemy import text

from app import db


def health(request):
    try:
        with db.engine().connect() as conn:
            heads = (
                conn.execute(text("SELECT version_num FROM alembic_version ORDER BY version_num"))
                .scalars()
                .all()
            )
    except Exception as exc:
        # Any failure here (server down, schema never migrated) means the app cannot serve.
        return 503, {"status": "error", "database": "error", "detail": _first_line(exc)}
    # More than one row only happens with unmerged migration branches.
    return 200, {"status": "ok", "database": "ok", "revision": ",".join(heads) or None}


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
