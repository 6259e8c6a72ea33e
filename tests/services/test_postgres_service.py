"""The test PostgreSQL server really starts, isolates databases and stops."""

from __future__ import annotations

import pytest

from tests.services.postgres import PostgresServer, find_pg_bin, port_accepts

pytestmark = pytest.mark.postgres


def test_postgres_server_lifecycle(tmp_path_factory: pytest.TempPathFactory) -> None:
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL binaries not found under /usr/lib/postgresql; run `make test` to install postgresql")
    import sqlalchemy

    server = PostgresServer(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        assert server.pid is not None
        port = server.port
        assert port_accepts(port)

        url_a = server.create_database("tether_a")
        url_b = server.create_database("tether_b")
        assert url_a == f"postgresql+psycopg://postgres@127.0.0.1:{port}/tether_a"
        assert url_b == server.url_for("tether_b")

        eng_a = sqlalchemy.create_engine(url_a)
        eng_b = sqlalchemy.create_engine(url_b)
        try:
            with eng_a.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
                assert eng_a.dialect.driver == "psycopg"
            with eng_a.begin() as conn:
                conn.execute(sqlalchemy.text("CREATE TABLE only_in_a (id integer primary key)"))
                conn.execute(sqlalchemy.text("INSERT INTO only_in_a VALUES (1)"))
            assert "only_in_a" in sqlalchemy.inspect(eng_a).get_table_names()
            assert "only_in_a" not in sqlalchemy.inspect(eng_b).get_table_names()
            with eng_b.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
        finally:
            eng_a.dispose()
            eng_b.dispose()

        server.drop_database("tether_b")
        server.drop_database("tether_b")  # IF EXISTS: idempotent
    finally:
        server.stop()

    assert server.pid is None
    assert not port_accepts(port)
    server.stop()  # idempotent


def test_postgres_server_context_manager(tmp_path_factory: pytest.TempPathFactory) -> None:
    if find_pg_bin() is None:
        pytest.fail("PostgreSQL binaries not found under /usr/lib/postgresql; run `make test` to install postgresql")
    import psycopg

    with PostgresServer(tmp_path_factory.mktemp("pgctx")) as server:
        port = server.port
        server.create_database("ctx_db")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="ctx_db") as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("ctx_db",)
    assert not port_accepts(port)
