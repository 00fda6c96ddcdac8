"""Ingest throughput and latency under gunicorn with the production settings.

    python -m bench.ingest [--quick] [--workers N] [--threads N]

A separate load process (several, in fact) emulates worker nodes over
keep-alive HTTP: each emulated attempt posts start, three heartbeats with a
2 KB log tail and metrics, and end, every event with a unique id. It measures
the closed-loop capacity, then p50/p99 latency with an open-loop schedule at
50 %, 70 % and 100 % of that capacity (latency counted from each request's
scheduled send time, so a stalled server cannot hide its queueing). In the
same run it measures a trivial Django view returning 204 under the same
gunicorn configuration (the floor). Afterwards the database must hold exactly
the events that were acknowledged.

Celery: the end events enqueue tasks on the Redis broker; no worker runs
during the measurement (it would compete for the same two cores), and the
queue is purged afterwards.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import string
import subprocess
import threading
import time
import uuid
from urllib.parse import urlsplit

from bench._common import (
    BROKER_URL,
    PG_ADMIN_URL,
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


def _load_thread(url, token, kind, rate, duration, prefix, out):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
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
            method, path, body = "POST", f"/api/v1/ingest/{event_kind}/", json.dumps(body)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            code = resp.status
        except (OSError, http.client.HTTPException):
            code = 0
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        latencies.append(time.monotonic() - scheduled)
        statuses[code] = statuses.get(code, 0) + 1
        if 200 <= code < 300:
            acked += 1
        sent += 1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (< 1 minute)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    args = parser.parse_args()
    phase = 5 if args.quick else 30

    print(
        f"config: gunicorn {args.workers} workers x {args.threads} threads (gthread), "
        f"production settings, PostgreSQL {PG_ADMIN_URL}/{DB_NAME}, broker {BROKER_URL}, "
        f"phases of {phase} s, load: 2 processes x 12 keep-alive connections, "
        "events: start, 3 heartbeats with a 2 KB tail, end"
    )
    print(machine())
    database_url = fresh_database(DB_NAME)
    env = production_env(database_url)
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "shell", "-c", SETUP).strip().splitlines()[-1]

    with gunicorn(env, args.workers, args.threads) as url:
        run_load(url, token, "noop", 2)  # warm up
        floor, f50, f99, _, _ = run_load(url, token, "noop", phase)
        print(
            f"floor (GET 204 view, closed loop): {floor:.0f} req/s  p50={f50:.1f} ms "
            f"p99={f99:.1f} ms"
        )
        acked_total = run_load(url, token, "ingest", 2)[3]  # warm up
        capacity, c50, c99, acked, st = run_load(url, token, "ingest", phase)
        acked_total += acked
        print(
            f"capacity (ingest, closed loop): {capacity:.0f} events/s  p50={c50:.1f} ms "
            f"p99={c99:.1f} ms  statuses={st}"
        )
        p99_at = {}
        for share in (0.5, 0.7, 1.0):
            rate, p50, p99, acked, st = run_load(url, token, "ingest", phase, capacity * share)
            acked_total += acked
            p99_at[share] = p99
            print(
                f"open loop at {share:.0%} ({capacity * share:.0f}/s offered): {rate:.0f} "
                f"events/s  p50={p50:.1f} ms  p99={p99:.1f} ms  statuses={st}"
            )

    rows = int(
        subprocess.run(
            ["psql", database_url, "-tAc", "SELECT count(*) FROM logserver_ingestevent"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    verdict = "OK" if rows == acked_total else "MISMATCH"
    print(f"database: {acked_total} events acknowledged, {rows} recorded: {verdict}")
    subprocess.run(["redis-cli", "-u", BROKER_URL, "FLUSHDB"], capture_output=True)
    print(
        f"events_per_s={capacity:.0f} p99_ms={p99_at[0.7]:.1f} floor_ratio={capacity / floor:.2f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
