"""Alembic environment: sees the models of every part of OLV."""

from __future__ import annotations

from alembic import context

import bob_loader.models  # noqa: F401  (registers tables on Base.metadata)
import enforcement.models  # noqa: F401
import idcards.models  # noqa: F401
import portal.card_issuers  # noqa: F401
import portal.models  # noqa: F401
import service.models  # noqa: F401
from olv.db import Base, is_sqlite, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite(url),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
