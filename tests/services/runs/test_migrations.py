"""The run store's schema: Alembic's migrations and the tables of `tables.py` must be the same schema,
since a new database gets `tables.py` (stamped) and an older one gets the migrations."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.metrics import Metrics
from services.runs import RunStore
from services.runs import migrate as migrate_module
from services.runs.tables import metadata
from tests.conftest import store_url

pytestmark = pytest.mark.timeout(60)


def _differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _schema(conn: Connection) -> dict[str, Any]:
    found = inspect(conn)
    return {
        table: (
            sorted((c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)),
            sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table)),
            found.get_pk_constraint(table)["constrained_columns"],
        )
        for table in sorted(found.get_table_names())
    }


async def test_the_migrations_build_the_tables_of_tables_py(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate_module.upgrade)  # Alembic, as an older database would get it
            assert await conn.run_sync(_differences) == []
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == migrate_module.HEAD
    finally:
        await engine.dispose()


async def test_a_new_database_gets_the_same_schema_as_the_migrations_build(url: str) -> None:
    fresh, migrated = create_async_engine(url), create_async_engine(store_url())
    try:
        await migrate_module.migrate(fresh)  # the new-database path: tables.py, stamped
        async with migrated.begin() as conn:
            await conn.run_sync(migrate_module.upgrade)
        async with fresh.connect() as a:
            assert await a.run_sync(_differences) == []
            assert (await a.execute(text("SELECT version_num FROM alembic_version"))).scalar() == migrate_module.HEAD
            if url.startswith("sqlite"):  # same dialect: the very same tables, columns and indexes
                async with migrated.connect() as b:
                    assert await a.run_sync(_schema) == await b.run_sync(_schema)
    finally:
        await fresh.dispose()
        await migrated.dispose()


async def test_a_database_at_an_older_revision_is_upgraded_by_alembic(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_async_engine(url)
    upgraded: list[bool] = []
    real = migrate_module.upgrade

    def spy(conn: Connection) -> None:
        upgraded.append(True)
        real(conn)

    try:
        async with engine.begin() as conn:  # a database someone left with a foreign table and no revision
            await conn.execute(text("CREATE TABLE other_app (id INTEGER PRIMARY KEY)"))
        monkeypatch.setattr(migrate_module, "upgrade", spy)
        await migrate_module.migrate(engine)
        assert upgraded == [True]
        async with engine.connect() as conn:  # our tables exactly; the foreign one left alone
            differences = await conn.run_sync(_differences)
        assert [(kind, table.name) for kind, table in differences] == [("remove_table", "other_app")]
    finally:
        await engine.dispose()


async def test_a_database_at_0001_with_runs_is_upgraded_and_opened(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:  # a store as the first release left it: one run in flight
            await conn.run_sync(migrate_module.upgrade, "0001")
            await conn.execute(
                text(
                    "INSERT INTO runs (run_id, status, model, mcp_servers, task, options, output, rounds, instance, "
                    "incomplete, created_at, started_at) VALUES ('run_old', 'running', 'm', '[]', 't', '{}', '', 0, "
                    "'gw-old', false, 1.0, 1.0)"
                )
            )
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == "0001"
            assert "instances" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
        await migrate_module.migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == migrate_module.HEAD
            row = (await conn.execute(text("SELECT status, cancel_requested_at FROM runs"))).one()
            assert tuple(row) == ("running", None)
            assert (await conn.execute(text("SELECT count(*) FROM instances"))).scalar() == 0
    finally:
        await engine.dispose()

    store = await RunStore.open(url, instance="gw-old", metrics=Metrics())  # the old instance starts again
    try:
        assert await store.status_of("run_old") == "interrupted"
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("SELECT id FROM instances"))).scalars().all() == ["gw-old"]
    finally:
        await store.aclose()
