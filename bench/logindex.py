"""The database log index on PostgreSQL: indexing throughput and search latency.

    DATABASE_URL=postgres://root@127.0.0.1:5432/anything python -m bench.logindex [--quick]

DATABASE_URL names the PostgreSQL server; the benchmark creates (and drops
first) its own database, prodmon_bench_logindex (--db names another), on it,
and migrates it.

1. Indexing throughput: attempts' logs are stored as 64 KiB chunks, then
   logserver.indexing cuts them into lines and writes LogLine rows with the
   tsvector and trigram GIN indexes in place: lines per second through the
   whole path (reassembly, line numbering, bulk insert, index maintenance).
2. Search latency: LogLine is filled with synthetic but realistic art/ROOT
   job-log lines by COPY (the GIN indexes dropped during the load and rebuilt
   after, as for any bulk load), up to each target size in turn; then every
   query of a fixed mix runs repeatedly through logserver.selectors.log_search
   (scoped to one of two experiments, hits hydrated with their attempts) and
   p50/p95 are reported per query and overall.

Targets: 1 M and 10 M stored lines; --quick uses 100 k and 1 M and finishes in
about a minute on two cores; --targets picks others (e.g. --targets 10000000).
--reuse keeps the benchmark database of an earlier run when it already holds
the lines (to re-time searches after a change without reloading 10 M lines).

Each query is timed cold and warm. Cold: its first run, on a new connection
(new backend: empty catalog, plan and relation caches). PostgreSQL's shared
buffers and the OS page cache are shared with everything else on the server
and are not flushed, so "cold" is a first search on a new connection, not a
read from disk (a disk-cold search is slower). Warm: the following --repeats runs, p50 and p95.
--explain prints EXPLAIN (ANALYZE, BUFFERS) of each query's SQL at the
largest target.
"""

import argparse
import datetime as dt
import io
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench._common import machine, percentile

DB_NAME = "prodmon_bench_logindex"
LINES_PER_ATTEMPT = 1000
T_END = dt.datetime(2025, 3, 31, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=30)

MODULES = ["RootInput", "GENIEGen", "LArG4", "DetSim", "SpacePointSolver", "PandoraTrack"]
WORDS = (
    "processing record event module producer filter analyzer output input file tree branch "
    "geometry channel wire hit cluster track shower vertex calibration database conditions "
    "service timing memory summary begin end open close read write fill skip merge"
).split()


def _line(rnd: random.Random, n: int) -> tuple[str, int]:
    """One synthetic log line and its level (0 info, 1 warning, 2 error)."""
    r = rnd.random()
    if r < 0.30:
        return (
            f"Begin processing the {n}th record. run: {20000000 + n // 5000} "
            f"subRun: {n % 50} event: {n}",
            0,
        )
    if r < 0.55:
        mod = rnd.choice(MODULES)
        words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 9)))
        return f"%MSG-i {mod}:  {mod}:{rnd.choice(WORDS)} {words}", 0
    if r < 0.70:
        return (
            f"TimeReport> Time report complete in {rnd.uniform(0.1, 900):.3f} seconds "
            f"VmPeak {rnd.randint(800, 4000)} MB",
            0,
        )
    if r < 0.85:
        path = "/".join(rnd.choice(WORDS) for _ in range(4))
        return f"Opened input file /pnfs/dune/tape_backed/{path}_{n:07d}.root", 0
    if r < 0.97:
        return f"%MSG-w {rnd.choice(MODULES)}: {' '.join(rnd.sample(WORDS, 6))}", 1
    if r < 0.9990:
        return (
            f"%MSG-e {rnd.choice(MODULES)}: {' '.join(rnd.sample(WORDS, 5))} failed with code "
            f"{rnd.randint(1, 99)}",
            2,
        )
    if r < 0.99985:
        return (
            "    Fatal Root Error: @SUB=TFile::TFile file "
            f"/pnfs/dune/scratch/users/dunepro/fluxfiles/gsimple_DUNE_{n % 97}.root does not exist",
            2,
        )
    return "Caught signal 11: segmentation violation in LArG4::produce", 2


def _setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "prodmon.settings.embedded"
    os.environ.setdefault("PRODMON_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    settings.PRODMON_LOG_INDEX = "database"
    settings.PRODMON_LOG_INDEX_ON_INGEST = False


def _production(n_attempts: int, first_job: int = 0):
    """Two experiments; attempts alternate between them, 4 campaigns, 8 sites."""
    from django.utils import timezone

    from prodmon.models import Attempt, Campaign, Experiment, Job, Node, Stage

    exps = [Experiment.objects.get_or_create(name=n)[0] for n in ("dune", "mu2e")]
    stages = []
    for exp in exps:
        for c in ("mc2025a", "mc2025b"):
            camp, _ = Campaign.objects.get_or_create(experiment=exp, name=c)
            stages.append(Stage.objects.get_or_create(campaign=camp, name="gen")[0])
    nodes = [
        Node.objects.get_or_create(
            hostname=f"wn{i:03d}.site{i % 8}", defaults={"site": f"S{i % 8}"}
        )[0]
        for i in range(64)
    ]
    jobs = Job.objects.bulk_create(
        [
            Job(stage=stages[i % len(stages)], key=f"in_{first_job + i:08d}.root", state="failed")
            for i in range(n_attempts)
        ]
    )
    now = timezone.now()
    rnd = random.Random(first_job)
    return Attempt.objects.bulk_create(
        [
            Attempt(
                job=job,
                number=1,
                node=nodes[i % len(nodes)],
                status="failed",
                exit_code=rnd.choice([0, 1, 65, 134]),
                started_at=now,
                ended_at=now,
            )
            for i, job in enumerate(jobs)
        ]
    )


def bench_indexing(lines: int) -> dict:
    from logserver import indexing, services
    from prodmon.models import Attempt

    attempts = _production(
        max(1, lines // 5000), first_job=int(os.environ.get("BENCH_FIRST_JOB", 10_000_000))
    )
    rnd = random.Random(11)
    per = lines // len(attempts)
    t0 = time.perf_counter()
    stored = 0
    for attempt in attempts:
        data = "".join(_line(rnd, n)[0] + "\n" for n in range(per)).encode()
        for off in range(0, len(data), 65536):
            services.log_chunk_store(attempt=attempt, offset=off, data=data[off : off + 65536])
        Attempt.objects.filter(pk=attempt.pk).update(log_bytes=len(data))
        stored += len(data)
    store_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = sum(indexing.log_index_attempt(attempt_id=a.pk) for a in attempts)
    index_s = time.perf_counter() - t0
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"lines": done, "bytes": stored, "store_s": store_s, "index_s": index_s}


FTS_INDEXES = {
    "logline_text_tsv": "CREATE INDEX logline_text_tsv ON logserver_logline "
    "USING gin (to_tsvector('simple'::regconfig, text))",
    "logline_text_trgm": "CREATE INDEX logline_text_trgm ON logserver_logline "
    "USING gin (text gin_trgm_ops)",
}


def load_lines(target: int) -> dict:
    """COPY synthetic lines into LogLine until it holds `target` rows."""
    from django.db import connection

    from logserver.models import LogLine
    from prodmon.models import Attempt

    have = LogLine.objects.count()
    need = target - have
    if need <= 0:
        return {"copied": 0, "copy_s": 0.0, "index_s": 0.0}
    attempts = _production(need // LINES_PER_ATTEMPT + 1, first_job=have)
    # Resolved before the COPY: the connection can run nothing else meanwhile.
    experiment_of = dict(
        Attempt.objects.filter(pk__in=[a.pk for a in attempts]).values_list(
            "pk", "job__stage__campaign__experiment_id"
        )
    )
    rnd = random.Random(target)
    # A pool of generated lines, drawn from at random: generating every line
    # afresh would make this a benchmark of Python's random module.
    pool = [_line(rnd, n) for n in range(50_000)]
    with connection.cursor() as cursor:
        for name in FTS_INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
    t0 = time.perf_counter()
    raw = connection.connection
    copied = 0
    with (
        raw.cursor() as cur,
        cur.copy(
            'COPY logserver_logline (attempt_id, experiment_id, line_no, "offset", text, '
            "timestamp, level) FROM STDIN"
        ) as copy,
    ):
        buf = io.StringIO()
        for attempt in attempts:
            exp_id = experiment_of[attempt.pk]
            start = T_END - SPAN * rnd.random()
            offset = 0
            for n in range(1, LINES_PER_ATTEMPT + 1):
                if copied >= need:
                    break
                text, level = pool[rnd.randrange(len(pool))]
                ts = start + dt.timedelta(seconds=n)
                buf.write(
                    f"{attempt.pk}\t{exp_id}\t{n}\t{offset}\t{text}\t{ts.isoformat()}\t{level}\n"
                )
                offset += len(text) + 1
                copied += 1
                if buf.tell() > 4 << 20:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
        copy.write(buf.getvalue())
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = DEFAULT")
    copy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # One connection per index, so the two GIN builds use both cores.
    db_url = os.environ["DATABASE_URL"]

    def build(sql: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute(sql)

    with ThreadPoolExecutor(max_workers=len(FTS_INDEXES)) as pool_:
        list(pool_.map(build, FTS_INDEXES.values()))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"copied": copied, "copy_s": copy_s, "index_s": time.perf_counter() - t0}


QUERIES = [
    ("rare words", "segmentation violation", {}),
    ("uncommon word", "TFile", {}),
    ("common word", "processing", {}),
    ("two common words", "record event", {}),
    ("phrase", '"does not exist"', {}),
    ("common phrase", '"Begin processing"', {}),
    ("substring phrase", '"gsimple_DUNE_4"', {}),
    ("word + campaign", "failed", {"campaign": "mc2025b"}),
    ("word + exit code", "TFile", {"exit_code": 65}),
    ("word + last day", "failed", {"since": T_END - dt.timedelta(days=1)}),
    ("no match", "xyzzyplugh", {}),
]


def _search_sql(scope: set[int], text: str, filters: dict) -> list[tuple[str, tuple]]:
    """The SQL statements one search runs (captured, not rebuilt by hand)."""
    from django.db import connection

    from logserver import selectors

    seen: list[tuple[str, tuple]] = []

    def capture(execute, sql, params, many, context):
        seen.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        selectors.log_search(experiment_ids=scope, text=text, limit=50, **filters)
    return [
        (sql, params)
        for sql, params in seen
        if "logserver_logline" in sql and not sql.startswith("EXPLAIN")
    ]


def explain(scope: set[int]) -> None:
    from django.db import connection

    for label, text, filters in QUERIES:
        print(f"\n--- EXPLAIN {label}: {text} {filters or ''}")
        for sql, params in _search_sql(scope, text, filters):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                for (line,) in cursor.fetchall():
                    print("   " + line)


def bench_search(repeats: int) -> tuple[list[tuple], list[float]]:
    from django.db import connection

    from logserver import selectors
    from prodmon.models import Experiment

    scope = {Experiment.objects.get(name="dune").pk}
    rows, everything = [], []
    for label, text, filters in QUERIES:
        connection.close()  # cold: a new backend for the first run
        t0 = time.perf_counter()
        selectors.log_search(experiment_ids=scope, text=text, limit=50, **filters)
        cold = (time.perf_counter() - t0) * 1000
        times = []
        hits = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = selectors.log_search(experiment_ids=scope, text=text, limit=50, **filters)
            times.append((time.perf_counter() - t0) * 1000)
            hits = len(result.hits)
        everything += times
        rows.append((label, cold, percentile(times, 50), percentile(times, 95), hits))
    return rows, everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 k and 1 M lines (~1 minute)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each query")
    parser.add_argument(
        "--targets", type=int, nargs="+", default=None, help="stored-line targets, ascending"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the benchmark database of an earlier run"
    )
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE every query")
    parser.add_argument("--db", default=DB_NAME, help=f"benchmark database (default {DB_NAME})")
    parser.add_argument(
        "--skip-indexing", action="store_true", help="skip the indexing-throughput part"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench.logindex needs DATABASE_URL=postgres://… (the server to benchmark)")
    parts = urlsplit(url)
    db = args.db
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone()
        if not (args.reuse and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
    bench_url = urlunsplit(parts._replace(path=f"/{db}"))

    started = time.perf_counter()
    targets = args.targets or ((100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000))
    index_lines = 20_000 if args.quick else 200_000
    repeats = args.repeats or (15 if args.quick else 30)
    _setup_django(bench_url)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
    print("bench.logindex: database log index (PostgreSQL full-text + pg_trgm)")
    print(machine())
    print("load average at start: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(
        f"config: PostgreSQL {pg_version} (shared_buffers {shared_buffers}), database {db}, "
        f"targets {', '.join(f'{t:,}' for t in targets)} lines, "
        f"{LINES_PER_ATTEMPT} lines per attempt, 2 experiments, queries scoped to one, "
        f"limit 50, {repeats} runs per query{' (--quick)' if args.quick else ''}"
    )

    if args.skip_indexing:
        result = None
    else:
        result = bench_indexing(index_lines)
    if result:
        print(
            f"indexing: {result['lines']:,} lines ({result['bytes'] / 1e6:.1f} MB) stored as "
            f"64 KiB chunks in {result['store_s']:.1f} s, indexed in {result['index_s']:.1f} s = "
            f"{result['lines'] / result['index_s']:,.0f} lines/s"
        )
    for target in targets:
        load = load_lines(target)
        print(
            f"\nloaded to {target:,} lines: COPY {load['copied']:,} rows in "
            f"{load['copy_s']:.1f} s, GIN indexes (tsvector + trigram) built in "
            f"{load['index_s']:.1f} s"
        )
        rows, everything = bench_search(repeats)
        print(f"  {'query':<20} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'hits':>5}")
        for label, cold, p50, p95, hits in rows:
            print(f"  {label:<20} {cold:>8.1f} {p50:>8.1f} {p95:>8.1f} {hits:>5}")
        print(
            f"  {'all queries':<20} {max(r[1] for r in rows):>8.1f} "
            f"{percentile(everything, 50):>8.1f} {percentile(everything, 95):>8.1f}"
        )
        sys.stdout.flush()
    if args.explain:
        from prodmon.models import Experiment

        explain({Experiment.objects.get(name="dune").pk})
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
