"""The throwaway PostgreSQL cluster of tests/postgres.py: it answers, hands out empty databases, and stops
without leaving a process behind."""

from __future__ import annotations

import asyncpg
import psutil

from tests.postgres import PostgresCluster


def dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL (postgresql+asyncpg://... -> postgresql://...)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def test_cluster_answers_on_loopback(postgres_cluster: PostgresCluster) -> None:
    assert postgres_cluster.url == f"postgresql+asyncpg://bridge@127.0.0.1:{postgres_cluster.port}/bridge"
    connection = await asyncpg.connect(dsn(postgres_cluster.url))
    try:
        assert await connection.fetchval("select 1") == 1
        assert (await connection.fetchval("show server_version")).startswith("15")
        assert await connection.fetchval("show listen_addresses") == "127.0.0.1"
        assert await connection.fetchval("select current_user") == "bridge"
    finally:
        await connection.close()


async def test_new_database_is_fresh_and_empty(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    other = postgres_cluster.new_database("test_other_db")
    assert other != postgres_url
    for url in (postgres_url, other):
        connection = await asyncpg.connect(dsn(url))
        try:
            assert await connection.fetchval("select current_database()") == url.rsplit("/", 1)[1]
            tables = await connection.fetchval(
                "select count(*) from information_schema.tables where table_schema = 'public'"
            )
            assert tables == 0
            await connection.execute("create table marker (id int)")  # visible only in this database
        finally:
            await connection.close()


def test_stop_leaves_no_process() -> None:
    cluster = PostgresCluster().start()
    try:
        assert cluster.pid is not None
        postmaster = psutil.Process(cluster.pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        assert len(processes) > 1  # the postmaster and its background workers
        tmp_dir = cluster.tmp_dir
    finally:
        cluster.stop()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert cluster.pid is None
    assert tmp_dir is not None and not tmp_dir.exists()
    cluster.stop()  # a second stop is harmless
