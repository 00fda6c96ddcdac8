"""The files in deploy/ are checked with the real tools: nginx -t,
systemd-analyze verify, and gunicorn started from its config."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        service_missing(
            f"needs {name} (Debian package: {'nginx-light' if name == 'nginx' else name})"
        )
    return path


def test_nginx_accepts_the_site(tmp_path):
    nginx = _tool("nginx")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=prodmon.test",
            "-keyout",
            tmp_path / "key.pem",
            "-out",
            tmp_path / "cert.pem",
        ],
        check=True,
        capture_output=True,
    )
    site = (DEPLOY / "nginx" / "prodmon.conf").read_text()
    site = site.replace("/etc/ssl/certs/prodmon.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/ssl/private/prodmon.key", str(tmp_path / "key.pem"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    r = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr


def test_nginx_body_limit_matches_the_app():
    site = (DEPLOY / "nginx" / "prodmon.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)([kKmM]?);", site)
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2).lower()]
    assert int(size.group(1)) * factor == settings.INGEST_MAX_BODY_BYTES


def test_systemd_units_verify(tmp_path):
    analyze = _tool("systemd-analyze")
    venv_bin = Path(sys.executable).parent
    units = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text().replace("/srv/prodmon/.venv/bin", str(venv_bin))
        text = text.replace("/srv/prodmon", str(ROOT)).replace(
            "EnvironmentFile=/etc/prodmon/prodmon.env", f"EnvironmentFile={tmp_path}/env"
        )
        text = re.sub(r"^(User|Group)=prodmon$", r"\1=root", text, flags=re.M)
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    (tmp_path / "env").write_text("DJANGO_SETTINGS_MODULE=prodmon.settings.production\n")
    assert len(units) == 4
    r = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        # Containers have no running systemd; these lines are about the host, not the units.
        if line.strip()
        and "Failed to" not in line
        and "/run/systemd" not in line
        and "not running" not in line
        and "unit-files" not in line
    ]
    assert not problems, "\n".join(problems)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_starts_from_its_config_and_serves(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        PRODMON_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        PRODMON_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="prodmon.settings.embedded",
        PRODMON_ACCESS_LOG="off",
    )
    env.pop("DATABASE_URL", None)
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    check = subprocess.run(
        [gunicorn, "--check-config", "prodmon.wsgi", "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [gunicorn, "prodmon.wsgi", "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = None
        for _ in range(60):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.25)
        assert body == b'{"status": "ok"}'
        assert (tmp_path / "metrics").is_dir()  # the Prometheus multiprocess directory
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_compose_file_runs_every_part_with_production_settings():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "redis", "elasticsearch", "web", "worker", "beat", "ingest-drain"} <= set(
        services
    )
    assert "ingest_drain" in services["ingest-drain"]["command"]
    for name in ("web", "worker", "beat", "ingest-drain"):
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "prodmon.settings.production"
        for required in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_ALLOWED_HOSTS"):
            assert env[required], f"{name} lacks {required}"
    assert "gunicorn" in services["web"]["command"]


@pytest.mark.parametrize(
    "unit", ["prodmon-web", "prodmon-worker", "prodmon-beat", "prodmon-ingest-drain"]
)
def test_each_unit_reads_the_environment_file_and_restarts(unit):
    text = (DEPLOY / "systemd" / f"{unit}.service").read_text()
    assert "EnvironmentFile=/etc/prodmon/prodmon.env" in text
    assert "Restart=on-failure" in text or "Restart=always" in text
