"""Shared parts of the benchmarks: machine facts, a scratch PostgreSQL
database, and prodmon under gunicorn with the production settings."""

import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")


def machine() -> str:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB memory, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(
        ["psql", f"{PG_ADMIN_URL}/{db}", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )


def fresh_database(name: str) -> str:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    return f"{PG_ADMIN_URL}/{name}"


def production_env(database_url: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="prodmon.settings.production",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=BROKER_URL,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECURE_SSL_REDIRECT="false",
        PRODMON_INGEST_RATE="100000000/min",
        PRODMON_ACCESS_LOG="off",
        PRODMON_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def manage(env: dict, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@contextmanager
def gunicorn(env: dict, workers: int, threads: int):
    """prodmon under gunicorn with deploy/gunicorn.conf.py; yields the base URL."""
    port = free_port()
    env = dict(
        env,
        PRODMON_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(workers),
        PRODMON_WEB_THREADS=str(threads),
    )
    # The server's log goes to a file: a pipe nobody reads fills up (64 KiB of
    # 429 warnings under overload) and then blocks every worker thread.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn",
            "prodmon.wsgi",
            "-c",
            "deploy/gunicorn.conf.py",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(
                        "gunicorn did not start: " + log.read()[-4000:].decode(errors="replace")
                    ) from None
                time.sleep(0.2)
        yield url
    except BaseException:
        # Whatever went wrong in the caller, the server's own log says why.
        log.seek(0)
        tail = log.read()[-6000:].decode(errors="replace")
        print(f"--- gunicorn log (last 6000 bytes) ---\n{tail}\n--- end of gunicorn log ---")
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]
