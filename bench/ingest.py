"""Ingest throughput and latency under gunicorn with the production settings.

    python -m bench.ingest [--quick] [--workers N] [--threads N] [--mode queued|inline]

A separate load process (several, in fact) emulates worker nodes over
keep-alive HTTP: each emulated attempt posts start, three heartbeats with a
2 KB log tail and metrics, and end, every event with a unique id. It measures
the closed-loop capacity, then p50/p99 latency with an open-loop schedule at
50 %, 70 % and 100 % of that capacity (latency counted from each request's
scheduled send time, so a stalled server cannot hide its queueing). In the
same run it measures a trivial Django view returning 204 under the same
gunicorn configuration (the floor). Afterwards the database must hold exactly
the events that were acknowledged.

Ingest mode (PRODMON_INGEST_MODE): with --mode queued (the default, what
deploy/ runs) a request stores its event and one `manage.py ingest_drain`
process applies the queue while the load runs, on the same two cores. The
figures count an event only once it is applied: after each phase the bench
waits for the queue to empty, and a phase's rate is the acknowledged events
over the phase plus that wait (a drain that falls behind lowers it). The apply
lag (received -> applied) is printed per phase. With --mode inline every event
is applied in its own request's transaction.

Celery: the end events enqueue tasks on the Redis broker; no worker runs
during the measurement (it would compete for the same two cores), and the
queue is purged afterwards.
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

from bench._common import (
    BROKER_URL,
    PG_ADMIN_URL,
    ROOT,
    fresh_database,
    gunicorn,
    machine,
    manage,
    percentile,
    production_env,
)

DB_NAME = "prodmon_bench_ingest"
SETUP = """
from prodmon import services
from logserver.services import token_create
e = services.experiment_create(name="atlas")
c = services.campaign_create(experiment=e, name="mc23")
services.stage_create(campaign=c, name="simul", expected_jobs=1000000)
print(token_create(experiment=e, name="bench", scopes=["ingest"])[1])
"""
TAIL = "".join(random.Random(7).choice(string.ascii_letters + " ") for _ in range(2047)) + "\n"


def _events_of_attempt(prefix: str, n: int):
    attempt = str(uuid.uuid4())
    ident = {"campaign": "mc23", "stage": "simul", "job": f"{prefix}-{n}", "attempt": attempt}
    yield (
        "start",
        {
            **ident,
            "host": f"wn{n % 400:03d}.{prefix}",
            "site": f"SITE{n % 10}",
            "node": {"cvmfs": True, "os": "AlmaLinux 9"},
            "cores": 8,
        },
    )
    offset = 0
    for beat in range(3):
        yield (
            "heartbeat",
            {
                **ident,
                "metrics": {
                    "cpu_s": 1700.0 * (beat + 1),
                    "wall_s": 1800.0 * (beat + 1),
                    "peak_rss_bytes": 2_000_000_000,
                    "disk_bytes": 4_000_000_000,
                    "events_processed": 100 * (beat + 1),
                },
                "log": {"offset": offset, "data": TAIL},
            },
        )
        offset += len(TAIL)
    yield (
        "end",
        {
            **ident,
            "exit_code": 0,
            "metrics": {"cpu_s": 6000.0, "wall_s": 6400.0, "events_processed": 400},
            "outputs": [
                {
                    "name": f"{prefix}-{n}.HITS.root",
                    "size": 123456789,
                    "checksum": "adler32:0a1b2c3d",
                }
            ],
        },
    )


class _Wire:
    """A keep-alive HTTP/1.1 client doing only what the load needs: it writes
    the request bytes itself and reads the answer's status line, headers and
    Content-Length body. http.client parses every answer's headers with
    email.parser, which cost the load generator more CPU per request than the
    server's floor view, on the same two cores as the server."""

    def __init__(self, host: str, port: int, token: str):
        self.address = (host, port)
        self.head = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.sock = self.rfile = None

    def _connect(self):
        self.sock = socket.create_connection(self.address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def close(self):
        if self.sock is not None:
            self.rfile.close()
            self.sock.close()
        self.sock = self.rfile = None

    def request(self, method: str, path: str, body: bytes | None) -> int:
        if self.sock is None:
            self._connect()
        body = body or b""
        self.sock.sendall(
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self.head
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = self.rfile.readline()
        if not status:
            raise OSError("connection closed by the server")
        code = int(status.split(None, 2)[1])
        length, close = 0, False
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            self.rfile.read(length)
        if close:
            self.close()
        return code


def _load_thread(url, token, kind, rate, duration, prefix, out):
    parts = urlsplit(url)
    conn = _Wire(parts.hostname, parts.port, token)
    latencies, acked, statuses = [], 0, {}
    start = time.monotonic()
    interval = 1.0 / rate if rate else 0.0
    sent = 0
    n = 0
    events = _events_of_attempt(prefix, n)
    while True:
        scheduled = start + sent * interval if rate else time.monotonic()
        now = time.monotonic()
        if scheduled - start >= duration or now - start >= duration + 5:
            break
        if rate and scheduled > now:
            time.sleep(scheduled - now)
        if kind == "noop":
            method, path, body = "GET", "/healthz/noop", None
        else:
            try:
                event_kind, body = next(events)
            except StopIteration:
                n += 1
                events = _events_of_attempt(prefix, n)
                event_kind, body = next(events)
            body["event_id"] = uuid.uuid4().hex
            method, path = "POST", f"/api/v1/ingest/{event_kind}/"
            body = json.dumps(body).encode()
        try:
            code = conn.request(method, path, body)
        except (OSError, ValueError, IndexError):
            code = 0
            conn.close()
        latencies.append(time.monotonic() - scheduled)
        statuses[code] = statuses.get(code, 0) + 1
        if 200 <= code < 300:
            acked += 1
        sent += 1
    conn.close()
    out.append((latencies, acked, statuses, time.monotonic() - start))


def _load_process(url, token, kind, rate_per_thread, duration, threads, tag, queue):
    results: list = []
    workers = [
        threading.Thread(
            target=_load_thread,
            args=(
                url,
                token,
                kind,
                rate_per_thread,
                duration,
                f"{tag}-{i}-{uuid.uuid4().hex[:6]}",
                results,
            ),
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(results)


def run_load(url, token, kind, duration, total_rate=None, processes=2, threads=12):
    """Returns (acked_per_s, p50_ms, p99_ms, acked, statuses)."""
    queue = mp.Queue()
    per_thread = total_rate / (processes * threads) if total_rate else None
    procs = [
        mp.Process(
            target=_load_process,
            args=(url, token, kind, per_thread, duration, threads, f"p{i}", queue),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in queue.get()]
    for p in procs:
        p.join()
    latencies = [x for r in results for x in r[0]]
    acked = sum(r[1] for r in results)
    statuses: dict = {}
    for r in results:
        for code, count in r[2].items():
            statuses[code] = statuses.get(code, 0) + count
    elapsed = max(r[3] for r in results)
    return (
        acked / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        acked,
        statuses,
    )


def _psql(database_url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", database_url, "-tAc", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


def wait_applied(database_url: str, timeout: float = 600) -> float:
    """Seconds until no event is left queued."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (
            _psql(database_url, "SELECT count(*) FROM logserver_ingestevent WHERE state = 'queued'")
            == "0"
        ):
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"the ingest queue did not drain within {timeout:.0f} s")


def apply_lag(database_url: str, since_id: int) -> tuple[float, float]:
    """p50 and p99 of received -> applied (ms) of events after row `since_id`."""
    out = _psql(
        database_url,
        "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY d), 0), "
        "coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY d), 0) FROM "
        "(SELECT extract(epoch FROM applied_at - received_at) * 1000 AS d "
        f"FROM logserver_ingestevent WHERE id > {since_id}) x",
    )
    p50, p99 = (float(x) for x in out.split("|"))
    return p50, p99


def last_id(database_url: str) -> int:
    return int(_psql(database_url, "SELECT coalesce(max(id), 0) FROM logserver_ingestevent"))


@contextmanager
def drain_process(env: dict, enabled: bool):
    if not enabled:
        yield None
        return
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "ingest_drain"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -signal.SIGTERM):
            log.seek(0)
            print("ingest_drain:", log.read()[-2000:].decode(errors="replace"))
        log.close()


def measured(database_url, queued, url, token, duration, total_rate=None):
    """run_load, then (in the queued mode) wait for the queue to empty.
    Returns (applied_per_s, p50_ms, p99_ms, acked, statuses, lag_line)."""
    before = last_id(database_url)
    rate, p50, p99, acked, statuses = run_load(url, token, "ingest", duration, total_rate)
    if not queued:
        return rate, p50, p99, acked, statuses, ""
    waited = wait_applied(database_url)
    elapsed = acked / rate if rate else duration
    lag50, lag99 = apply_lag(database_url, before)
    lag = (
        f"  apply lag p50={lag50:.0f} ms p99={lag99:.0f} ms, drained {waited:.1f} s after the phase"
    )
    return acked / (elapsed + waited), p50, p99, acked, statuses, lag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (< 1 minute)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument(
        "--mode",
        choices=("queued", "inline"),
        default="queued",
        help="PRODMON_INGEST_MODE of the server (default: queued, as deployed)",
    )
    args = parser.parse_args()
    phase = 5 if args.quick else 30
    queued = args.mode == "queued"

    print(
        f"config: gunicorn {args.workers} workers x {args.threads} threads (gthread), "
        f"production settings, PostgreSQL {PG_ADMIN_URL}/{DB_NAME}, broker {BROKER_URL}, "
        f"phases of {phase} s, load: 2 processes x 12 keep-alive connections, "
        "events: start, 3 heartbeats with a 2 KB tail, end, "
        f"ingest mode {args.mode}" + (" (one ingest_drain process)" if queued else "")
    )
    print(machine())
    database_url = fresh_database(DB_NAME)
    env = production_env(database_url, PRODMON_INGEST_MODE=args.mode)
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "shell", "-c", SETUP).strip().splitlines()[-1]

    with gunicorn(env, args.workers, args.threads) as url, drain_process(env, queued):
        run_load(url, token, "noop", 2)  # warm up
        floor, f50, f99, _, _ = run_load(url, token, "noop", phase)
        print(
            f"floor (GET 204 view, closed loop): {floor:.0f} req/s  p50={f50:.1f} ms "
            f"p99={f99:.1f} ms"
        )
        acked_total = measured(database_url, queued, url, token, 2)[3]  # warm up
        capacity, c50, c99, acked, st, lag = measured(database_url, queued, url, token, phase)
        acked_total += acked
        print(
            f"capacity (ingest, closed loop): {capacity:.0f} events/s applied  p50={c50:.1f} ms "
            f"p99={c99:.1f} ms  statuses={st}{lag}"
        )
        p99_at = {}
        for share in (0.5, 0.7, 1.0):
            rate, p50, p99, acked, st, lag = measured(
                database_url, queued, url, token, phase, capacity * share
            )
            acked_total += acked
            p99_at[share] = p99
            print(
                f"open loop at {share:.0%} ({capacity * share:.0f}/s offered): {rate:.0f} "
                f"events/s applied  p50={p50:.1f} ms  p99={p99:.1f} ms  statuses={st}{lag}"
            )

    rows = int(_psql(database_url, "SELECT count(*) FROM logserver_ingestevent"))
    applied = int(
        _psql(database_url, "SELECT count(*) FROM logserver_ingestevent WHERE state = 'applied'")
    )
    attempts = int(_psql(database_url, "SELECT count(*) FROM prodmon_attempt"))
    verdict = "OK" if rows == applied == acked_total else "MISMATCH"
    print(
        f"database: {acked_total} events acknowledged, {rows} recorded, {applied} applied, "
        f"{attempts} attempts: {verdict}"
    )
    subprocess.run(["redis-cli", "-u", BROKER_URL, "FLUSHDB"], capture_output=True)
    print(
        f"events_per_s={capacity:.0f} p99_ms={p99_at[0.7]:.1f} floor_ratio={capacity / floor:.2f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
