"""Bulk ingest of log lines against raw PostgreSQL COPY into the same table.

    python -m bench.bulk [--quick] [--workers N] [--threads N] [--events N] [--lines N]

prodmon runs under gunicorn with the production settings on PostgreSQL, as
bench.ingest starts it. Load threads (keep-alive HTTP) post to the bulk
endpoint `/api/v1/ingest/bulk/` requests of `--events` heartbeats, each
carrying the next `--lines` lines of its attempt's log (about 100 bytes a
line), for a fixed time. The endpoint stores each chunk as it came in
logserver_logchunk (the log server's raw store; the line index is built
from it later by a Celery task, which does not run here) and enqueues the
indexing on the Redis broker.

In the same run, the same chunks (same attempts, same bytes, at fresh
offsets) are written by one PostgreSQL `COPY ... FROM STDIN (FORMAT BINARY)`
into the same table, with its indexes and constraints in place: the floor
that no HTTP API can beat. The ratio is bulk lines/s over COPY lines/s.

Afterwards the database must hold exactly the lines acknowledged: chunk
count, byte count and newline count are checked against what was sent.
"""

import argparse
import http.client
import json
import os
import random
import string
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bench._common import (
    PG_ADMIN_URL,
    fresh_database,
    gunicorn,
    machine,
    manage,
    percentile,
    production_env,
)
from bench.ingest import drain_process, wait_applied

DB_NAME = "prodmon_bench_bulk"
# Its own Redis database: the run empties it afterwards (the enqueued index tasks).
BULK_BROKER_URL = os.environ.get("BENCH_BULK_BROKER_URL", "redis://127.0.0.1:6379/13")
SETUP = """
from prodmon import services
from logserver.services import token_create
e = services.experiment_create(name="atlas")
c = services.campaign_create(experiment=e, name="mc23")
services.stage_create(campaign=c, name="simul", expected_jobs=1000000)
print(token_create(experiment=e, name="bench", scopes=["ingest"])[1])
"""
COPY_BASE_OFFSET = 1 << 50  # COPY rows go far past any offset the API wrote


def _line(rng: random.Random, attempt: int, n: int) -> str:
    words = "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(56))
    return f"2026-11-28T01:{n % 60:02d}:{n % 60:02d} INFO Athena[{attempt}] event {n:07d} {words}\n"


def _chunk(attempt_index: int, seq: int, lines: int) -> str:
    """The `seq`th chunk of an attempt: deterministic, so COPY can rebuild it."""
    rng = random.Random(attempt_index * 1_000_003 + seq)
    return "".join(_line(rng, attempt_index, seq * lines + i) for i in range(lines))


def _post(conn, token: str, body: dict) -> dict:
    conn.request(
        "POST",
        "/api/v1/ingest/bulk/",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"bulk: HTTP {resp.status}: {data[:300]!r}")
    return json.loads(data)


def _ident(attempt_index: int, uid: str) -> dict:
    return {"campaign": "mc23", "stage": "simul", "job": f"job-{attempt_index}", "attempt": uid}


def _load_thread(url, token, attempts, events, lines, duration, out, lock):
    """Posts bulk heartbeats for its own attempts, round robin, until time is up."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    sent_chunks: list[tuple[int, int]] = []  # (attempt index, seq) acknowledged
    latencies = []
    seq = {a: 0 for a, _ in attempts}
    offsets = {a: 0 for a, _ in attempts}
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < duration:
        batch, keys = [], []
        for _ in range(events):
            a, uid = attempts[i % len(attempts)]
            i += 1
            data = _chunk(a, seq[a], lines)
            batch.append(
                {
                    **_ident(a, uid),
                    "type": "heartbeat",
                    "event_id": uuid.uuid4().hex,
                    "log": {"offset": offsets[a], "data": data},
                }
            )
            keys.append((a, seq[a], len(data.encode())))
            seq[a] += 1
            offsets[a] += len(data.encode())
        t = time.monotonic()
        result = _post(conn, token, {"events": batch})
        latencies.append(time.monotonic() - t)
        for key, r in zip(keys, result["results"], strict=True):
            if r["status"] != "accepted":
                raise RuntimeError(f"event not accepted: {r}")
            sent_chunks.append(key)
    with lock:
        out.append((sent_chunks, latencies, time.monotonic() - start))


def _psql_value(database_url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", database_url, "-tAc", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 minute)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument(
        "--events", type=int, default=None, help="heartbeats per bulk request (100; 25 quick)"
    )
    parser.add_argument("--lines", type=int, default=100, help="log lines per heartbeat")
    parser.add_argument("--clients", type=int, default=4, help="concurrent load connections")
    parser.add_argument(
        "--mode",
        choices=("queued", "inline"),
        default="queued",
        help="PRODMON_INGEST_MODE of the server (default: queued, as deployed)",
    )
    args = parser.parse_args()
    duration = 8 if args.quick else 30
    args.events = args.events or (25 if args.quick else 100)
    n_attempts = args.clients * 25

    print(
        f"config: gunicorn {args.workers} workers x {args.threads} threads (gthread), "
        f"production settings, PostgreSQL {PG_ADMIN_URL}/{DB_NAME}, broker {BULK_BROKER_URL}; "
        f"{args.clients} keep-alive clients for {duration} s, bulk requests of {args.events} "
        f"heartbeats x {args.lines} log lines (~100 bytes each), {n_attempts} attempts; "
        "then one COPY (FORMAT BINARY) of the same chunks into logserver_logchunk; "
        f"ingest mode {args.mode}"
        + (" (one ingest_drain process)" if args.mode == "queued" else "")
    )
    print(machine())
    database_url = fresh_database(DB_NAME)
    env = production_env(
        database_url, CELERY_BROKER_URL=BULK_BROKER_URL, PRODMON_INGEST_MODE=args.mode
    )
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "shell", "-c", SETUP).strip().splitlines()[-1]

    attempts = [(a, str(uuid.uuid4())) for a in range(n_attempts)]
    queued = args.mode == "queued"
    with gunicorn(env, args.workers, args.threads) as url, drain_process(env, queued):
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        for i in range(0, n_attempts, 100):  # the attempts exist before timing
            starts = [
                {
                    **_ident(a, uid),
                    "type": "start",
                    "event_id": uuid.uuid4().hex,
                    "host": f"wn{a:03d}.example.org",
                    "site": f"SITE{a % 10}",
                }
                for a, uid in attempts[i : i + 100]
            ]
            assert _post(conn, token, {"events": starts})["accepted"] == len(starts)
        conn.close()
        if queued:
            wait_applied(database_url)
        out: list = []
        lock = threading.Lock()
        threads = [
            threading.Thread(
                target=_load_thread,
                args=(
                    url,
                    token,
                    attempts[c :: args.clients],
                    args.events,
                    args.lines,
                    duration,
                    out,
                    lock,
                ),
            )
            for c in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Count a line once it is stored: in the queued mode, once drained.
        waited = wait_applied(database_url) if queued else 0.0
    chunks = [k for o in out for k in o[0]]
    latencies = [x for o in out for x in o[1]]
    elapsed = max(o[2] for o in out) + waited
    if queued:
        print(f"ingest queue drained {waited:.1f} s after the load stopped (counted in the time)")
    lines_sent = len(chunks) * args.lines
    bytes_sent = sum(k[2] for k in chunks)
    bulk_rate = lines_sent / elapsed
    print(
        f"bulk endpoint: {len(latencies)} requests, {len(chunks)} heartbeats, {lines_sent} lines "
        f"({bytes_sent / 1e6:.1f} MB) in {elapsed:.1f} s: {bulk_rate:,.0f} lines/s, "
        f"{len(chunks) / elapsed:,.0f} events/s; request p50={percentile(latencies, 50) * 1000:.0f}"
        f" ms p99={percentile(latencies, 99) * 1000:.0f} ms"
    )

    stored = _psql_value(
        database_url,
        "SELECT count(*) || ' ' || coalesce(sum(length), 0) || ' ' || coalesce(sum("
        "length(data) - length(replace(convert_from(data, 'UTF8'), E'\\n', '')::bytea)), 0) "
        "FROM logserver_logchunk",
    ).split()
    stored_chunks, stored_bytes, stored_lines = (int(x) for x in stored)
    ok = (stored_chunks, stored_bytes, stored_lines) == (len(chunks), bytes_sent, lines_sent)
    print(
        f"database: {stored_chunks} chunks, {stored_bytes} bytes, {stored_lines} lines stored; "
        f"sent {len(chunks)}, {bytes_sent}, {lines_sent}: {'OK' if ok else 'MISMATCH'}"
    )

    # The same chunks by raw COPY, into the same table, indexes in place.
    import psycopg

    ids = dict(
        (uid, int(pk))
        for uid, pk in (
            line.split("|")
            for line in _psql_value(database_url, "SELECT uid, id FROM prodmon_attempt").split()
        )
    )
    uid_of = dict(attempts)
    now = datetime.now(UTC)
    rows = []
    offsets: dict[int, int] = {}
    for a, seq, _ in chunks:
        data = _chunk(a, seq, args.lines).encode()
        off = offsets.get(a, COPY_BASE_OFFSET)
        offsets[a] = off + len(data)
        rows.append((ids[uid_of[a]], off, len(data), data, now, now))
    with psycopg.connect(database_url) as pg:
        with pg.cursor() as cur:
            t = time.monotonic()
            with cur.copy(
                'COPY logserver_logchunk (attempt_id, "offset", length, data, received_at, '
                "logged_at) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(
                    ["bigint", "bigint", "integer", "bytea", "timestamptz", "timestamptz"]
                )
                for row in rows:
                    copy.write_row(row)
            pg.commit()
            copy_s = time.monotonic() - t
    copy_rate = lines_sent / copy_s
    copied = int(
        _psql_value(
            database_url,
            f'SELECT count(*) FROM logserver_logchunk WHERE "offset" >= {COPY_BASE_OFFSET}',
        )
    )
    print(
        f"COPY: {len(rows)} chunks, {lines_sent} lines in {copy_s:.2f} s: {copy_rate:,.0f} lines/s "
        f"({copied} rows stored: {'OK' if copied == len(rows) else 'MISMATCH'})"
    )
    subprocess.run(["redis-cli", "-u", BULK_BROKER_URL, "FLUSHDB"], capture_output=True)
    if not ok or copied != len(rows):
        raise SystemExit("stored data does not match what was sent")
    print(f"lines_per_s={bulk_rate:.0f} copy_ratio={bulk_rate / copy_rate:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
