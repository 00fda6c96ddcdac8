"""Full-log upload and download: streamed, size-limited, sha256 recorded;
the filesystem store and an S3-compatible store."""

import gzip
import hashlib
import os

import pytest
from django.test import Client

from logserver import fulllog, services
from logserver.models import FullLog
from tests.factories import MembershipFactory, UserFactory, make_token

pytestmark = pytest.mark.django_db

LOG = b"".join(b"event %d processed \xff ok\n" % i for i in range(20_000))


@pytest.fixture
def fs_store(settings, tmp_path):
    settings.LOGSTORE_BACKEND = "filesystem"
    settings.LOGSTORE_ROOT = str(tmp_path / "store")
    return tmp_path / "store"


@pytest.fixture
def api(ingest_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")


def _url(attempt) -> str:
    return f"/api/v1/attempts/{attempt.uid}/log"


def _put(client, attempt, body: bytes, method="put", **headers):
    return getattr(client, method)(
        _url(attempt), data=body, content_type="application/octet-stream", **headers
    )


def test_it_stores_a_plain_upload_with_its_sha256(api, make_attempt, fs_store):
    attempt = make_attempt()
    r = _put(api, attempt, LOG)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["size"] == len(LOG)
    assert body["sha256"] == hashlib.sha256(LOG).hexdigest()
    full = FullLog.objects.get(attempt=attempt)
    stored = fs_store / full.storage_key
    assert gzip.decompress(stored.read_bytes()) == LOG
    assert full.stored_size == stored.stat().st_size < len(LOG) / 5
    assert full.backend == "filesystem"


def test_it_accepts_a_gzip_upload_by_post(api, make_attempt, fs_store):
    attempt = make_attempt()
    r = _put(api, attempt, gzip.compress(LOG), method="post", HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 201, r.content
    assert r.json()["size"] == len(LOG)
    assert r.json()["sha256"] == hashlib.sha256(LOG).hexdigest()


def test_it_accepts_concatenated_gzip_members(make_attempt, fs_store):
    attempt = make_attempt()
    body = gzip.compress(LOG[:1000]) + gzip.compress(LOG[1000:])
    full = fulllog.full_log_store(attempt=attempt, stream=_Stream(body), gzipped=True)
    assert full.sha256 == hashlib.sha256(LOG).hexdigest()


class _Stream:
    def __init__(self, data: bytes, piece: int = 777):
        self.data, self.pos, self.piece = data, 0, piece

    def read(self, n=-1):
        n = self.piece if n < 0 else min(n, self.piece)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def test_a_second_upload_replaces_the_first_and_its_object(
    api, make_attempt, fs_store, django_capture_on_commit_callbacks
):
    attempt = make_attempt()
    _put(api, attempt, b"first\n")
    first = FullLog.objects.get(attempt=attempt).storage_key
    with django_capture_on_commit_callbacks(execute=True):
        r = _put(api, attempt, b"second\n")
    assert r.status_code == 201
    full = FullLog.objects.get(attempt=attempt)
    assert full.size == 7
    assert full.storage_key != first
    assert not (fs_store / first).exists()


def test_it_refuses_a_log_over_the_limit(api, make_attempt, fs_store, settings):
    settings.LOGSTORE_MAX_BYTES = 10_000
    attempt = make_attempt()
    r = _put(api, attempt, LOG)  # refused by Content-Length before a byte is read
    assert r.status_code == 413
    bomb = gzip.compress(b"0" * 5_000_000)
    assert len(bomb) < 10_000
    r = _put(api, attempt, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 413
    assert "10000" in r.json()["message"]
    assert not FullLog.objects.exists()
    assert not [p for p in fs_store.rglob("*") if p.is_file()]


def test_it_checks_a_sha256_sent_by_the_client(api, make_attempt, fs_store):
    attempt = make_attempt()
    r = _put(api, attempt, LOG, HTTP_X_CONTENT_SHA256="0" * 64)
    assert r.status_code == 422
    assert not FullLog.objects.exists()
    r = _put(api, attempt, LOG, HTTP_X_CONTENT_SHA256=hashlib.sha256(LOG).hexdigest())
    assert r.status_code == 201


def test_it_refuses_broken_gzip_and_empty_bodies(api, make_attempt, fs_store):
    attempt = make_attempt()
    broken = gzip.compress(LOG)[:-20]
    r = _put(api, attempt, broken, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 400
    assert "truncated" in r.json()["message"]
    r = _put(api, attempt, b"not gzip at all", HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 400
    assert "gzip" in r.json()["message"]
    assert _put(api, attempt, b"").status_code == 400
    assert _put(api, attempt, b"x", HTTP_CONTENT_ENCODING="br").status_code == 415


def test_only_an_ingest_token_of_the_attempt_s_experiment_may_upload(
    make_attempt, fs_store, experiment, other_experiment
):
    attempt = make_attempt()
    _, reader = make_token(experiment, scopes=("read",), name="reader")
    _, other = make_token(other_experiment, scopes=("ingest",), name="other")
    assert _put(Client(HTTP_AUTHORIZATION=f"Bearer {reader}"), attempt, LOG).status_code == 403
    assert _put(Client(HTTP_AUTHORIZATION=f"Bearer {other}"), attempt, LOG).status_code == 404
    assert _put(Client(), attempt, LOG).status_code in (401, 403)


def test_the_full_log_downloads_as_text_for_readers(api, make_attempt, fs_store, experiment):
    attempt = make_attempt()
    _put(api, attempt, gzip.compress(LOG), HTTP_CONTENT_ENCODING="gzip")
    r = api.get(_url(attempt))
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == LOG
    assert r["Content-Type"] == "text/plain; charset=utf-8"
    assert r["X-Content-SHA256"] == hashlib.sha256(LOG).hexdigest()
    assert "attachment" in r["Content-Disposition"]
    user = UserFactory()
    MembershipFactory(user=user, experiment=experiment)
    browser = Client()
    browser.force_login(user)
    r = browser.get(f"/attempts/{attempt.uid}/log/download")
    assert r["X-Prodmon-Log-Source"] == "full"
    assert b"".join(r.streaming_content) == LOG
    outsider = Client()
    outsider.force_login(UserFactory())
    assert outsider.get(f"/attempts/{attempt.uid}/log/download").status_code == 404


def test_without_a_full_log_the_download_is_the_reassembled_tail(make_attempt, experiment):
    attempt = make_attempt(log_bytes=20)
    services.log_chunk_store(attempt=attempt, offset=0, data=b"head\n")
    services.log_chunk_store(attempt=attempt, offset=10, data=b"tail\n")
    user = UserFactory()
    MembershipFactory(user=user, experiment=experiment)
    client = Client()
    client.force_login(user)
    r = client.get(f"/attempts/{attempt.uid}/log/download")
    assert r["X-Prodmon-Log-Source"] == "tail"
    assert b"".join(r.streaming_content) == (
        b"head\n\n[prodmon: 5 bytes missing here]\ntail\n\n[prodmon: 5 bytes missing here]\n"
    )


# --- S3 -----------------------------------------------------------------------


@pytest.fixture
def s3_server(settings, monkeypatch):
    """An S3 API served by moto's server mode on 127.0.0.1.

    No real S3-compatible store (MinIO, Ceph RGW, dCache) can run on the
    machines this was written on; moto's server speaks the S3 REST protocol over
    HTTP, so boto3 and our store go through the same calls as against a real
    endpoint (LOGSTORE_S3_ENDPOINT_URL)."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "prodmon-test",
        "AWS_SECRET_ACCESS_KEY": "prodmon-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="prodmon-logs")
    settings.LOGSTORE_BACKEND = "s3"
    settings.LOGSTORE_S3_BUCKET = "prodmon-logs"
    settings.LOGSTORE_S3_ENDPOINT_URL = endpoint
    settings.LOGSTORE_S3_REGION = "us-east-1"
    settings.LOGSTORE_S3_PREFIX = "site/logs/"
    yield client
    server.stop()


def test_it_keeps_full_logs_in_an_s3_compatible_store(
    api, make_attempt, s3_server, django_capture_on_commit_callbacks
):
    attempt = make_attempt()
    big = LOG * 8  # several multipart-sized reads through the spool
    r = _put(api, attempt, gzip.compress(big), HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 201, r.content
    full = FullLog.objects.get(attempt=attempt)
    assert full.backend == "s3"
    obj = s3_server.get_object(Bucket="prodmon-logs", Key=f"site/logs/{full.storage_key}")
    assert gzip.decompress(obj["Body"].read()) == big
    r = api.get(_url(attempt))
    assert b"".join(r.streaming_content) == big

    with django_capture_on_commit_callbacks(execute=True):
        _put(api, attempt, b"replaced\n")
    keys = [o["Key"] for o in s3_server.list_objects_v2(Bucket="prodmon-logs")["Contents"]]
    assert keys == [f"site/logs/{FullLog.objects.get(attempt=attempt).storage_key}"]

    fulllog.full_log_delete(full_log=FullLog.objects.get(attempt=attempt))
    assert "Contents" not in s3_server.list_objects_v2(Bucket="prodmon-logs")


def test_the_s3_store_reports_a_missing_object_as_not_found(s3_server):
    from logserver.filestore import get_file_store

    store = get_file_store()
    assert not store.exists("nope.log.gz")
    with pytest.raises(FileNotFoundError):
        store.open("nope.log.gz")
    assert os.environ["AWS_ACCESS_KEY_ID"] == "prodmon-test"


def test_an_upload_is_streamed_past_django_s_in_memory_limit(api, make_attempt, fs_store, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    attempt = make_attempt()
    r = _put(api, attempt, LOG)
    assert r.status_code == 201, r.content
    assert r.json()["size"] == len(LOG)
