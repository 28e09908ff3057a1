import sqlite3

import pytest
from sqlalchemy import text

from deepe_widgets import store
from deepe_widgets.errors import DeepeError


def test_sqlite_runs_in_wal_mode_owner_only(home):
    engine = store.get_engine()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    db = home / "deepe.db"
    assert db.exists()
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_database_from_an_older_version_opens(home):
    # An "older version": a job table without the later columns and no schema version row.
    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(home / "deepe.db")
    conn.execute("CREATE TABLE job (id INTEGER PRIMARY KEY, uuid VARCHAR, name VARCHAR, kind VARCHAR, "
                 "method VARCHAR, params JSON, status VARCHAR, created_at FLOAT)")
    conn.execute("INSERT INTO job (uuid, name, kind, method, params, status, created_at) "
                 "VALUES ('abcd', 'old', 'train', 'SFT-Demo', '{}', 'succeeded', 0)")
    conn.commit()
    conn.close()
    store.dispose_engines()
    from deepe_widgets import jobs

    job = jobs.get_job(1)
    assert job.name == "old" and job.attempt == 0 and job.copied_from is None
    assert job.error_detail == {}
    with store.get_engine().connect() as c:
        version = c.execute(text("SELECT value FROM meta WHERE key='schema_version'")).scalar()
        assert version == str(store.SCHEMA_VERSION)


def test_database_from_a_newer_version_is_refused(home):
    store.get_engine()
    with store.get_engine().begin() as conn:
        conn.execute(text("UPDATE meta SET value='999' WHERE key='schema_version'"))
    store.dispose_engines()
    with pytest.raises(DeepeError, match="newer deepe-widgets"):
        store.get_engine()
