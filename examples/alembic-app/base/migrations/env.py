"""Alembic environment: connects to `$DATABASE_URL` and runs the migrations.

Each migration runs in its own transaction (`transaction_per_migration=True`) and so commits
on its own. When a later migration fails, the earlier ones of the same upgrade stay applied and
`alembic_version` points at the last one that succeeded: the deploy host has to notice and
downgrade to where it started. That is what a real multi-step upgrade does, and what this
example exists to exercise.
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from app.db import database_url
from app.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: prints the SQL instead of running it (used for review)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # NullPool: a migration run is one short-lived process; a pool would only hold connections.
    connectable = create_engine(database_url(), poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
