"""Production settings refuse to start half-configured; the embedded default
needs nothing. Each case imports the settings in a fresh interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "DJANGO_SETTINGS_MODULE": "prodmon.settings.production",
    "DJANGO_SECRET_KEY": "x" * 50,
    "DJANGO_ALLOWED_HOSTS": "prodmon.example.org",
    "DATABASE_URL": "postgres://prodmon@127.0.0.1:5432/prodmon",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}
PROBE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.SESSION_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, s.CELERY_TASK_ALWAYS_EAGER, "
    "s.ALLOWED_HOSTS)"
)


def _start(env: dict) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_start_when_complete():
    r = _start(GOOD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True True False ['prodmon.example.org']"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("CELERY_BROKER_URL", "CELERY_BROKER_URL must be set"),
        ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE"),
        ("DATABASE_URL", "DATABASE_URL must be set"),
        ("DJANGO_ALLOWED_HOSTS", "DJANGO_ALLOWED_HOSTS must be set"),
    ],
)
def test_production_settings_refuse_to_start_without(missing, message):
    env = {k: v for k, v in GOOD.items() if k != missing}
    r = _start(env)
    assert r.returncode != 0
    assert "ImproperlyConfigured" in r.stderr
    assert message in r.stderr


def test_production_reads_the_secret_from_a_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    env = {k: v for k, v in GOOD.items() if k != "DJANGO_SECRET_KEY"}
    r = _start({**env, "DJANGO_SECRET_KEY_FILE": str(key)})
    assert r.returncode == 0, r.stderr


def test_production_refuses_a_short_secret():
    r = _start({**GOOD, "DJANGO_SECRET_KEY": "short"})
    assert "32+ characters" in r.stderr


def test_the_embedded_default_needs_no_services(tmp_path):
    r = _start(
        {"DJANGO_SETTINGS_MODULE": "prodmon.settings.embedded", "PRODMON_VAR_DIR": str(tmp_path)}
    )
    assert r.returncode == 0, r.stderr
    # In-process tasks are the embedded mode's documented choice.
    assert r.stdout.split()[2] == "True"
    assert (tmp_path / "secret_key").exists()


@pytest.mark.django_db
def test_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["index"] == "ok (database)"


@pytest.mark.django_db
def test_readyz_fails_when_the_elasticsearch_index_does_not_answer(client, settings):
    # The real client against a port where nothing listens.
    settings.PRODMON_LOG_INDEX = "elasticsearch"
    settings.ELASTICSEARCH_URL = "http://127.0.0.1:1"
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["index"].startswith("error:")
    assert r.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_says_which_part_is_down(client, settings):
    # A real broker URL on a port where nothing listens.
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["broker"].startswith("error:")


def test_the_reporter_is_served_for_download_without_login(client):
    r = client.get("/reporter/prodmon-report.py")
    assert r.status_code == 200
    body = b"".join(r.streaming_content)
    assert body == (ROOT / "logserver" / "prodmon_report.py").read_bytes()
    assert 'filename="prodmon-report.py"' in r["Content-Disposition"]


def test_production_queues_ingest_by_default_and_refuses_an_unknown_mode():
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.PRODMON_INGEST_MODE)"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "PRODMON_INGEST"))
    }
    for extra, expected in (({}, "queued"), ({"PRODMON_INGEST_MODE": "inline"}, "inline")):
        r = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            env={**clean, **GOOD, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.strip() == expected, r.stderr
    r = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**clean, **GOOD, "PRODMON_INGEST_MODE": "later"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "PRODMON_INGEST_MODE must be 'inline' or 'queued', not 'later'" in r.stderr
