import pytest

from davclient import make_configuration
from server.app import CrmApplication
from server.crm import db


def test_principal_and_default_collections(dav):
    r = dav.propfind(f"/{dav.user}/", depth="1")
    assert r.status == 207
    assert f"/{dav.user}/calendar/" in r.text and f"/{dav.user}/contacts/" in r.text


def test_one_pool_per_process_whatever_db_pool_size_says(db_url):
    """Auth, rights and storage share one engine: a second pool per worker would break the
    connection arithmetic of docs/deploy.md (found by the soak work)."""
    app = CrmApplication(make_configuration(db_url, storage={"db_pool_size": "2"}))
    engine = db.shared_engine(db_url, 2)
    assert app._auth._engine is engine and app._rights._engine is engine
    assert app._storage.uow.engine is engine


@pytest.mark.postgresql
def test_prepared_statements_can_be_turned_off_in_the_url(pg_server_url):
    """For pgbouncer before 1.21 in transaction mode (docs/deploy.md)."""
    def threshold(url):
        engine = db.make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
                return conn.connection.driver_connection.prepare_threshold
        finally:
            engine.dispose()

    assert threshold(pg_server_url) == 5                      # psycopg's default
    assert threshold(pg_server_url + "?prepare_threshold=none") is None
    assert threshold(pg_server_url + "?prepare_threshold=20") == 20
    with pytest.raises(ValueError, match="prepare_threshold in the database URL must be"):
        db.make_engine(pg_server_url + "?prepare_threshold=lots")
