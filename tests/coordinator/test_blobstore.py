"""The filesystem blob store, garbage collection, the move of pre-0007 bytes out of SQL, and
migration 0007 itself (SQLite and PostgreSQL)."""

import hashlib
import json
import os
import time

import pytest
import sqlalchemy as sa

from coordinator.app import create_runtime
from coordinator.blobstore.errors import BlobCorrupt, BlobMismatch, BlobMissing
from coordinator.blobstore.filesystem import FilesystemBlobStore
from coordinator.blobstore.gc import collect_garbage
from coordinator.db import downgrade_database, make_engine, upgrade_database
from coordinator.models import Blob, UploadSession
from coordinator.settings import Settings
from tests.coordinator.server import database_url, make_settings

DATA = b"veritrain blob " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


def test_put_read_range_size_delete(store):
    assert not store.exists("dataset", SHA)
    assert store.put_stream("dataset", SHA, [DATA[:7], DATA[7:]]) == len(DATA)
    assert store.exists("dataset", SHA) and not store.exists("checkpoint", SHA)  # namespaces
    assert store.size("dataset", SHA) == len(DATA)
    assert b"".join(store.open_range("dataset", SHA)) == DATA
    assert b"".join(store.open_range("dataset", SHA, 5, 20)) == DATA[5:20]
    assert [name for name, _ in store.iter_objects("dataset")] == [SHA]
    store.delete("dataset", SHA)
    store.delete("dataset", SHA)  # already gone: no error
    with pytest.raises(BlobMissing):
        store.size("dataset", SHA)
    with pytest.raises(BlobMissing):
        list(store.open_range("dataset", SHA))


def test_bytes_that_do_not_match_their_address_are_never_stored(store):
    with pytest.raises(BlobMismatch):
        store.put_stream("dataset", "0" * 64, [DATA])
    assert not store.exists("dataset", "0" * 64)
    assert not list((store.root / ".tmp").iterdir())  # no temporary file left behind


def test_put_file_links_without_copying_and_survives_the_source(store, tmp_path):
    source = tmp_path / "staged"
    source.write_bytes(DATA)
    store.put_file("checkpoint", SHA, source)
    assert os.stat(source).st_ino == os.stat(store.path("checkpoint", SHA)).st_ino
    source.unlink()
    assert store.read_bytes("checkpoint", SHA) == DATA


def test_a_corrupt_file_is_detected_on_read_and_repaired_by_a_new_put(store, caplog):
    store.put_stream("state", SHA, [DATA])
    path = store.path("state", SHA)
    path.write_bytes(DATA[:-1] + b"!")  # same size, one byte changed
    for start, end in ((0, None), (3, 9)):
        with pytest.raises(BlobCorrupt, match="corrupt"):
            store.open_range("state", SHA, start, end)
    assert "corrupt" in caplog.text
    path.write_bytes(DATA[:100])  # truncated
    with pytest.raises(BlobCorrupt):
        store.read_bytes("state", SHA)
    store.put_stream("state", SHA, [DATA])
    assert store.read_bytes("state", SHA) == DATA


def test_a_change_between_the_check_and_the_read_ends_the_stream(store):
    store.put_stream("dataset", SHA, [DATA])
    chunks = store.open_range("dataset", SHA)  # checked here
    store.path("dataset", SHA).write_bytes(b"x" * len(DATA))
    with pytest.raises(BlobCorrupt):
        b"".join(chunks)


def _settings(backend_url: str, tmp_path, **overrides) -> Settings:
    return make_settings(backend_url, tmp_path, **overrides)


def _insert_blob(rt, kind: str, data: bytes, created_at: float) -> str:
    sha256 = rt.blobs.put_bytes(kind, data)
    with rt.db.engine.begin() as conn:
        conn.execute(
            sa.insert(Blob).values(
                kind=kind, sha256=sha256, size=len(data), created_at=created_at, uploader=None
            )
        )
    return sha256


def _age(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_gc_deletes_what_nothing_references_after_the_grace_period(backend, tmp_path):
    with database_url(backend, tmp_path) as url:
        rt = create_runtime(_settings(url, tmp_path, blob_gc_grace_s=3600))
        try:
            now = time.time()
            old_unused = _insert_blob(rt, "dataset", b"old unused", now - 7200)
            young_unused = _insert_blob(rt, "dataset", b"young unused", now - 60)
            orphan = rt.blobs.put_bytes("checkpoint", b"orphan bytes, no row")
            young_orphan = rt.blobs.put_bytes("checkpoint", b"just written, row coming")
            _age(rt.blobs.path("checkpoint", orphan), 7200)
            _age(rt.blobs.path("dataset", old_unused), 7200)
            with rt.db.engine.begin() as conn:
                conn.execute(
                    sa.insert(UploadSession).values(
                        id="a" * 32,
                        owner="b" * 64,
                        kind="dataset",
                        sha256="c" * 64,
                        size=10,
                        received=0,
                        target="{}",
                        created_at=now - 90000,
                        updated_at=now - 90000,
                    )
                )
            staged = rt.settings.get_upload_dir() / f"{'a' * 32}.part"
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(b"abandoned")
            torn = rt.blobs.root / ".tmp" / "put-torn"  # a put that died midway
            torn.write_bytes(b"half")
            _age(torn, 7200)
            report = collect_garbage(rt, now)
            assert report.sessions_expired == 1 and not staged.exists()
            assert report.staged_files_deleted == 1 and not torn.exists()
            assert report.rows_deleted == 1 and report.objects_deleted == 1
            assert not rt.blobs.exists("dataset", old_unused)
            assert rt.blobs.exists("dataset", young_unused)
            assert not rt.blobs.exists("checkpoint", orphan)
            assert rt.blobs.exists("checkpoint", young_orphan)
            with rt.db.read() as session:
                assert session.get(Blob, ("dataset", old_unused)) is None
                assert session.get(Blob, ("dataset", young_unused)) is not None
        finally:
            rt.close()


def test_gc_keeps_a_dataset_a_job_names(backend, tmp_path):
    with database_url(backend, tmp_path) as url:
        rt = create_runtime(_settings(url, tmp_path, blob_gc_grace_s=0))
        try:
            sha256 = _insert_blob(rt, "dataset", b"named by a job", 0)
            with rt.db.engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO jobs (job_id, submitter, spec_json, profile_label, bounty, "
                    "min_stake, verifier_fee, num_verifiers, num_segments, num_checkpoints, "
                    "state, created_at, bidding_deadline, deadline) VALUES "
                    f"('{'d' * 64}', '{'e' * 64}', '{{\"dataset\": {{\"sha256\": \"{sha256}\"}}}}',"
                    " 'p', 1, 1, 1, 1, 1, 2, 'bidding', 0, 0, 0)"
                )
            assert collect_garbage(rt, time.time() + 10).rows_deleted == 0
            assert rt.blobs.exists("dataset", sha256)
        finally:
            rt.close()


def test_0007_moves_bytes_out_of_sql_at_start_and_downgrades_while_they_are_there(
    backend, tmp_path
):
    data = b"a dataset stored under 0006"
    sha256 = hashlib.sha256(data).hexdigest()
    with database_url(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade_database(engine, "0006")
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO blobs (kind, sha256, size, data) VALUES ('dataset', :h, :n, :d)"
                    ),
                    {"h": sha256, "n": len(data), "d": data},
                )
            upgrade_database(engine)
            with engine.connect() as conn:
                held = conn.exec_driver_sql("SELECT legacy_data FROM blobs").scalar_one()
            assert bytes(held) == data  # the migration keeps them, in SQL
            downgrade_database(engine, "0006")  # and can still go back
            with engine.connect() as conn:
                assert bytes(conn.exec_driver_sql("SELECT data FROM blobs").scalar_one()) == data
            upgrade_database(engine)
            rt = create_runtime(_settings(url, tmp_path))  # start-up moves them to the store
            try:
                assert rt.blobs.read_bytes("dataset", sha256) == data
                with engine.connect() as conn:
                    row = conn.exec_driver_sql("SELECT legacy_data, size FROM blobs").one()
                assert row.legacy_data is None and row.size == len(data)
            finally:
                rt.close()
            with pytest.raises(RuntimeError, match="blob store"):
                downgrade_database(engine, "0006")  # below 0007 the bytes must be in SQL
        finally:
            engine.dispose()


def test_the_gc_command_collects_with_the_coordinators_settings(tmp_path, monkeypatch, capsys):
    from cli.main import main

    database = tmp_path / "c.db"
    monkeypatch.setenv("VERITRAIN_BLOB_GC_GRACE_S", "60")
    monkeypatch.setenv("VERITRAIN_SIGNING_KEY_FILE", str(tmp_path / "k"))
    store = FilesystemBlobStore(Settings(database_url=f"sqlite:///{database}").get_blob_dir())
    orphan = store.put_bytes("dataset", b"bytes whose commit never happened")
    _age(store.path("dataset", orphan), 120)
    assert main(["coordinator", "gc", "--database-url", f"sqlite:///{database}"]) == 0
    assert json.loads(capsys.readouterr().out)["objects_deleted"] == 1
    assert not store.exists("dataset", orphan)


def test_legacy_bytes_that_do_not_match_their_address_stay_in_sql(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    try:
        upgrade_database(engine, "0006")
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO blobs (kind, sha256, size, data) VALUES ('state', :h, 3, :d)"),
                {"h": "f" * 64, "d": b"bad"},
            )
    finally:
        engine.dispose()
    rt = create_runtime(_settings(url, tmp_path))
    try:
        assert not rt.blobs.exists("state", "f" * 64)
        with rt.db.read() as session:
            assert session.get(Blob, ("state", "f" * 64)).legacy_data == b"bad"
        assert "does not hash to its address" in caplog.text
    finally:
        rt.close()
