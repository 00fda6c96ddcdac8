"""Pages and API calls at production scale.

    python -m bench.pages [--quick] [--reuse] [--scale S] [--repeat N]

A generator loads a production-sized database with PostgreSQL COPY: at scale
1, 1 M jobs, about 3 M attempts and 20 M indexed log lines, on thousands of
nodes at tens of sites, with a failure mix (a Zipf mix of ~300 error classes,
fast-failing black-hole nodes), error classifications for every failed
attempt, node-health rows and progress samples. Indexes are dropped for the
load and built afterwards, as a bulk restore would. The data lives in its own
database (prodmon_bench_pages, prodmon_bench_pages_quick for --quick) and is
kept: --reuse times the pages again without regenerating.

Then it times the key pages and API calls through Django's test client in
this process (production settings, PostgreSQL, logged in as a viewer member
of the experiment, DEBUG off), and the black-hole scan and ETA computation
as the functions the Celery tasks and pages call:

- cold: a fresh database connection and an emptied Django cache before each
  call (PostgreSQL's shared buffers and the OS page cache stay warm: they
  cannot be dropped on a shared machine);
- warm: repeated calls.

It prints p50 and p95 per item and target; the last line names the worst
p95 over cold and warm: `worst=<item> p95_ms=<x>`.
"""

import argparse
import bisect
import io
import math
import os
import random
import subprocess
import time
import uuid
from datetime import UTC, datetime

from bench._common import PG_ADMIN_URL, machine, percentile, psql

FULL = {"jobs": 1_000_000, "attempts": 3_000_000, "lines": 20_000_000, "nodes": 6000, "sites": 60}
DAYS = 30
CAMPAIGNS = 20
STAGE_NAMES = ("evgen", "simul", "reco")
ERROR_CLASSES = 300
BLACK_HOLE_SHARE = 0.003
FLUSH = 20_000
# Job states and their shares: (state, share, status of the last attempt)
JOB_MIX = (
    ("pending", 0.08, None),
    ("queued", 0.03, "queued"),
    ("running", 0.06, "running"),
    ("succeeded", 0.73, "succeeded"),
    ("failed", 0.10, "failed"),
)
BIG_TABLES = (
    "prodmon_job",
    "prodmon_attempt",
    "logserver_logline",
    "triage_attemptclassification",
    "triage_nodehealth",
)
CACHE_URL = os.environ.get("BENCH_PAGES_REDIS_URL", "redis://127.0.0.1:6379/14")

ERROR_TEXTS = (
    ("site", "cvmfs: repository /cvmfs/atlas.cern.ch is not mounted", None, 65),
    ("resource-limit", "std::bad_alloc caught in {alg}::execute", 9, None),
    ("input-data", "TFile::Init: file root://eosatlas//eos/atlas/{ds} is truncated", None, 8),
    ("site", "xrootd: [ERROR] Server responded with an error: [3010] unable to open {ds}", None, 8),
    ("software", "Segmentation fault in {alg}::initialize", 11, None),
    ("configuration", "ERROR Unknown property '{prop}' of {alg}", None, 1),
    ("resource-limit", "job exceeded its walltime limit", 15, None),
    ("site", "stage-out failed: gfal-copy to {se} timed out after 600 s", None, 137),
    ("software", "FATAL {alg}: assertion 'hits.size() > 0' failed", None, 68),
    ("unknown", "pilot: payload exited without a job report", None, 255),
)
ALGS = ("G4AtlasAlg", "InDetSiSpTrackFinder", "MuonCombinedAlg", "CaloCellMaker", "TrigDecision")
INFO_TEXTS = (
    "AthenaEventLoopMgr INFO ===>>> done processing event #{a}, run #{b} {c} events processed",
    "PilotMonitor INFO cpu={a}s rss={b}MB vmem={c}MB",
    "StorageSvc INFO Reading input file root://eos{c}.cern.ch//eos/atlas/mc23/EVNT.{a}._{b}.pool",
    "ApplicationMgr INFO Application Manager Started successfully, {a} algorithms in {b} seq",
    "G4AtlasAlg INFO Event {a} took {b} ms in Geant4, {c} tracks",
)
WARN_TEXTS = (
    "TBranchElement::GetBasket WARNING branch {a} basket {b} has a bad key, {c} bytes",
    "IOVDbSvc WARNING folder /LAR/ElecCalib/{a} has no IOV for run {b}",
)


def _db_name(quick: bool) -> str:
    return "prodmon_bench_pages_quick" if quick else "prodmon_bench_pages"


def _scaled(scale: float) -> dict:
    return {k: max(1, int(v * scale)) if k not in ("sites",) else v for k, v in FULL.items()} | {
        "sites": max(8, int(FULL["sites"] * min(1.0, scale * 4)))
    }


def _env(database_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="prodmon.settings.production",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=CACHE_URL,
        REDIS_CACHE_URL=CACHE_URL,
        DJANGO_SECRET_KEY="bench-pages-" + "x" * 40,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        DJANGO_SECURE_SSL_REDIRECT="false",
        PRODMON_ACCESS_LOG="off",
        PRODMON_LOG_LEVEL="WARNING",
        DATABASE_CONN_MAX_AGE="600",
    )


# --- generation --------------------------------------------------------------------


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def _txt(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


class _Copy:
    """One COPY ... FROM STDIN on its own connection, written in blocks."""

    def __init__(self, url: str, table: str, columns: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=False)
        self.conn.execute("SET session_replication_role = replica")  # no FK triggers
        self.cur = self.conn.cursor()
        self.ctx = self.cur.copy(f"COPY {table} ({columns}) FROM STDIN")
        self.copy = self.ctx.__enter__()
        self.buf: list[str] = []
        self.rows = 0

    def add(self, row: str) -> None:
        self.buf.append(row)
        if len(self.buf) >= FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.copy.write("".join(self.buf))
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> int:
        self.flush()
        self.ctx.__exit__(None, None, None)
        self.conn.commit()
        self.conn.close()
        return self.rows


def _drop_indexes(cursor) -> list[str]:
    """Drop the non-primary-key indexes and unique constraints of the big
    tables; returns the statements that rebuild them (b-trees first)."""
    rebuild_btree, rebuild_gin = [], []
    for table in BIG_TABLES:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            [table],
        )
        for name, definition in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            rebuild_btree.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s "
            "AND i.indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = %s::regclass)",
            [table, table],
        )
        for name, definition in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
            (rebuild_gin if " gin " in definition.lower() else rebuild_btree).append(definition)
    return rebuild_btree + rebuild_gin


def _exp_cap(mean_extra: float) -> float:
    """The exponential mean whose floor has mean `mean_extra`."""
    return 1.0 / math.log(1.0 + 1.0 / mean_extra)


def generate(database_url: str, sizes: dict, seed: int = 9) -> dict:
    """Fill the migrated, empty database; returns the row counts."""
    import django
    from django.db import connection

    django.setup()
    from django.contrib.auth import get_user_model

    from prodmon.models import Campaign, Experiment, Membership, Role, Stage
    from triage.models import ErrorClass

    rng = random.Random(seed)
    now = time.time()
    t0 = time.monotonic()
    exp = Experiment.objects.create(name="atlas", title="ATLAS (bench)")
    user = get_user_model().objects.create_user("bench", password="bench-pages-password")
    Membership.objects.create(user=user, experiment=exp, role=Role.VIEWER)
    campaigns, stages = [], []
    for c in range(CAMPAIGNS):
        state = Campaign.State.ACTIVE if c % 4 else Campaign.State.COMPLETED
        camp = Campaign.objects.create(experiment=exp, name=f"mc23-{c:02d}", state=state)
        campaigns.append(camp)
        previous = None
        for order, name in enumerate(STAGE_NAMES):
            st = Stage.objects.create(campaign=camp, name=name, order=order, expected_jobs=0)
            if previous is not None:
                st.depends_on.add(previous)
            previous = st
            stages.append(st)
    # Stages get jobs by a Zipf-like weight: a few big tasks, many small.
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(stages))]
    rng.shuffle(weights)
    total_w = sum(weights)
    stage_jobs = [int(sizes["jobs"] * w / total_w) for w in weights]
    stage_jobs[0] += sizes["jobs"] - sum(stage_jobs)
    for st, n in zip(stages, stage_jobs, strict=True):
        st.expected_jobs = int(n * 1.1)
        st.save(update_fields=["expected_jobs"])

    classes = []
    for i in range(ERROR_CLASSES):
        category, text, signal, code = ERROR_TEXTS[i % len(ERROR_TEXTS)]
        classes.append(
            ErrorClass.objects.create(
                experiment=exp,
                key=f"bench:{i:03d}",
                source="rule" if i % 3 else "exit-code",
                title=f"{text.split(':')[0][:60]} [E{i:03d}]",
                category=category,
                code=code,
                template=text,
            )
        )
    class_cum = list(
        __import__("itertools").accumulate(1.0 / (i + 1) ** 1.1 for i in range(ERROR_CLASSES))
    )

    # Sites and nodes: site sizes by a Zipf-like weight.
    site_names = [f"SITE-{i:02d}" for i in range(sizes["sites"])]
    site_cum = list(
        __import__("itertools").accumulate(1.0 / (i + 1) ** 0.7 for i in range(sizes["sites"]))
    )
    n_nodes = sizes["nodes"]
    nodes = []  # (id, hostname, site)
    with connection.cursor() as cursor:
        rebuild = _drop_indexes(cursor)
    node_copy = _Copy(
        database_url,
        "prodmon_node",
        "id, hostname, site, properties, first_seen, last_seen",
    )
    for i in range(n_nodes):
        site = site_names[bisect.bisect(site_cum, rng.random() * site_cum[-1])]
        host = f"wn{i:05d}.{site.lower()}.example.org"
        nodes.append((i + 1, host, site))
        node_copy.add(f"{i + 1}\t{host}\t{site}\t{{}}\t{_ts(now - DAYS * 86400)}\t{_ts(now)}\n")
    node_copy.close()
    black_holes = set(rng.sample(range(n_nodes), max(2, int(n_nodes * BLACK_HOLE_SHARE))))
    good_nodes = [i for i in range(n_nodes) if i not in black_holes]
    bh_list = sorted(black_holes)

    jobs_with_attempts = sizes["jobs"] * (1 - JOB_MIX[0][1])
    lam = _exp_cap(max(0.05, sizes["attempts"] / jobs_with_attempts - 1.0))
    lines_per_attempt = sizes["lines"] / sizes["attempts"]
    base_lines = int(lines_per_attempt)
    frac_lines = lines_per_attempt - base_lines
    mix_cum = list(__import__("itertools").accumulate(share for _, share, _ in JOB_MIX))

    job_copy = _Copy(
        database_url,
        "prodmon_job",
        "id, key, expected_outputs, events_expected, max_attempts, state, attempt_count, "
        "duplicate_completions, created_at, updated_at, good_attempt_id, stage_id",
    )
    att_copy = _Copy(
        database_url,
        "prodmon_attempt",
        "id, uid, number, batch_id, status, created_at, started_at, ended_at, "
        "last_heartbeat_at, exit_code, signal, reported_success, cores, wall_s, cpu_s, "
        "cpu_efficiency, peak_rss_bytes, disk_bytes, events_processed, output_bytes, log_bytes, "
        "is_duplicate_completion, job_id, node_id, batch_state, hold_reason",
    )
    line_copy = _Copy(
        database_url,
        "logserver_logline",
        'id, line_no, "offset", text, timestamp, level, attempt_id, experiment_id',
    )
    cls_copy = _Copy(
        database_url,
        "triage_attemptclassification",
        "id, source, line, line_number, line_is_absolute, tail_offset, excerpt, detail, site, "
        "seen_at, wall_s, cores, classified_at, attempt_id, campaign_id, experiment_id, "
        "node_id, stage_id, error_class_id",
    )
    N = "\\N"
    exp_id = exp.pk
    attempt_id = line_id = cls_id = 0
    counts = {
        st.pk: dict.fromkeys(("pending", "queued", "running", "succeeded", "failed"), 0)
        for st in stages
    }
    job_id = 0
    for st, n_jobs in zip(stages, stage_jobs, strict=True):
        camp_id = st.campaign_id
        for _ in range(n_jobs):
            job_id += 1
            state, _, last_status = JOB_MIX[bisect.bisect(mix_cum, rng.random() * mix_cum[-1])]
            counts[st.pk][state] += 1
            n_att = 0 if state == "pending" else 1 + min(11, int(rng.expovariate(1.0 / lam)))
            # Walk back from the last activity: recent jobs are more common.
            if state == "running":
                t_end = now - rng.uniform(0, 10 * 3600)
            elif state == "queued":
                t_end = now - rng.uniform(0, 2 * 3600)
            else:
                t_end = now - DAYS * 86400 * rng.random() ** 1.3
            plan = []
            cursor_t = t_end
            for number in range(n_att, 0, -1):
                status = last_status if number == n_att else "failed"
                node = None
                if status != "queued":
                    if status == "failed" and rng.random() < 0.08:
                        node = bh_list[rng.randrange(len(bh_list))]
                    else:
                        node = good_nodes[rng.randrange(len(good_nodes))]
                if node in black_holes:
                    cls_i = 0
                    wall = rng.uniform(20, 200)
                elif status == "failed":
                    cls_i = bisect.bisect(class_cum, rng.random() * class_cum[-1])
                    wall = rng.lognormvariate(7.5, 1.2)
                else:
                    cls_i = None
                    wall = rng.lognormvariate(9.3, 0.5)
                if status == "running":
                    started, ended = cursor_t, None
                elif status == "queued":
                    started = ended = None
                else:
                    ended = cursor_t
                    started = ended - wall
                created = (started or cursor_t) - rng.uniform(60, 3 * 3600)
                plan.append((number, status, node, cls_i, wall, created, started, ended))
                cursor_t = created - rng.uniform(60, 1800)
            plan.reverse()
            created_job = (plan[0][5] if plan else t_end) - rng.uniform(0, 3600)
            good = N
            for number, status, node, cls_i, wall, created, started, ended in plan:
                attempt_id += 1
                cores = 8 if st.name != "evgen" else 1
                hb = N
                if status == "running":
                    hb = _ts(now - rng.uniform(0, 1800))
                exit_code = signal = N
                reported = N
                cpu = eff = N
                wall_s = N
                if status in ("succeeded", "failed"):
                    wall_s = f"{wall:.1f}"
                    e = rng.uniform(0.55, 0.97)
                    eff, cpu = f"{e:.3f}", f"{wall * cores * e:.1f}"
                    hb = _ts(ended)
                if status == "succeeded":
                    exit_code, reported, good = "0", "t", str(attempt_id)
                elif status == "failed":
                    _, text, sig, code = ERROR_TEXTS[cls_i % len(ERROR_TEXTS)]
                    if sig is not None:
                        signal = str(sig)
                    else:
                        exit_code = str(code)
                    reported = "f"
                node_id = N if node is None else str(node + 1)
                att_copy.add(
                    f"{attempt_id}\t{uuid.UUID(int=rng.getrandbits(128), version=4)}\t{number}\t"
                    f"{job_id}.{number}\t{status}\t{_ts(created)}\t"
                    f"{_ts(started) if started else N}\t{_ts(ended) if ended else N}\t{hb}\t"
                    f"{exit_code}\t{signal}\t{reported}\t{cores}\t{wall_s}\t{cpu}\t{eff}\t"
                    f"{rng.randint(500, 3000) * 1_000_000}\t{rng.randint(1, 20) * 10**9}\t"
                    f"{N if status != 'succeeded' else rng.randint(50, 1000)}\t{N}\t"
                    f"{rng.randint(5, 500) * 1000}\tf\t{job_id}\t{node_id}\t\t\n"
                )
                if started is None:
                    continue
                # Indexed log lines, the last one the error of a failed attempt.
                n_lines = max(1, base_lines - 2 + rng.randint(0, 4) + (rng.random() < frac_lines))
                t_last = ended or now
                step = max(1.0, (t_last - started) / n_lines)
                offset = 0
                host = nodes[node][1]
                for ln in range(1, n_lines + 1):
                    line_id += 1
                    if ln == n_lines and status == "failed":
                        text = (
                            ERROR_TEXTS[cls_i % len(ERROR_TEXTS)][1].format(
                                alg=ALGS[cls_i % len(ALGS)],
                                ds=f"mc23.{cls_i:03d}.EVNT.{job_id % 997}.root",
                                prop=f"Opt{cls_i}",
                                se=f"{nodes[node][2]}_DATADISK",
                            )
                            + f" on {host} [E{cls_i:03d}]"
                        )
                        level = 2
                    elif ln % 7 == 3:
                        text = WARN_TEXTS[ln % 2].format(a=ln, b=job_id % 10007, c=number)
                        level = 1
                    else:
                        text = INFO_TEXTS[(ln + job_id) % len(INFO_TEXTS)].format(
                            a=job_id % 100003, b=ln * 17 + number, c=ln
                        )
                        level = 0
                    line_copy.add(
                        f"{line_id}\t{ln}\t{offset}\t{text}\t{_ts(started + ln * step)}\t"
                        f"{level}\t{attempt_id}\t{exp_id}\n"
                    )
                    offset += len(text) + 1
                if status == "failed":
                    cls_id += 1
                    cls_copy.add(
                        f"{cls_id}\t{'rule' if cls_i % 3 else 'exit-code'}\t{_txt(text)}\t"
                        f"{n_lines}\tf\t0\t[]\t\t{nodes[node][2]}\t{_ts(ended)}\t{wall_s}\t"
                        f"{cores}\t{_ts(ended)}\t{attempt_id}\t{camp_id}\t{exp_id}\t"
                        f"{node + 1}\t{st.pk}\t{classes[cls_i].pk}\n"
                    )
            job_copy.add(
                f"{job_id}\t{st.name}-{job_id:08d}\t[]\t1000\t5\t{state}\t{n_att}\t0\t"
                f"{_ts(created_job)}\t{_ts(t_end)}\t{good}\t{st.pk}\n"
            )
    rows = {
        "jobs": job_copy.close(),
        "attempts": att_copy.close(),
        "log_lines": line_copy.close(),
        "classifications": cls_copy.close(),
    }
    # Node health: every node has a row (one is made when a node is first
    # judged); the black holes are flagged, a few others suspect.
    health = _Copy(
        database_url,
        "triage_nodehealth",
        "state, since, manual, note, evidence, updated_at, experiment_id, node_id",
    )
    suspects = set(rng.sample(good_nodes, max(1, len(good_nodes) // 100)))
    for i in range(n_nodes):
        state = "black_hole" if i in black_holes else "suspect" if i in suspects else "healthy"
        health.add(f"{state}\t{_ts(now - 3600)}\tf\t\t{{}}\t{_ts(now)}\t{exp_id}\t{i + 1}\n")
    rows["node_health"] = health.close()
    # Progress samples: hourly over the window, ramping to today's counts.
    samples = _Copy(
        database_url,
        "prodmon_stageprogresssample",
        "stage_id, at, pending, queued, running, succeeded, failed",
    )
    for st in stages:
        c = counts[st.pk]
        for h in range(14 * 24, -1, -6):
            f = 1.0 - h / (14 * 24 + 1)
            samples.add(
                f"{st.pk}\t{_ts(now - h * 3600)}\t{int(c['pending'] * (2 - f))}\t"
                f"{c['queued']}\t{c['running']}\t{int(c['succeeded'] * f)}\t"
                f"{int(c['failed'] * f)}\n"
            )
    rows["progress_samples"] = samples.close()
    generated_s = time.monotonic() - t0
    t1 = time.monotonic()
    from prodmon import latest_attempt

    latest_attempt.backfill(connection)  # COPY fired no triggers
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        for statement in rebuild:
            cursor.execute(statement)
        for table in ("prodmon_node", *BIG_TABLES, "prodmon_stageprogresssample"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        cursor.execute(
            "UPDATE triage_errorclass e SET times_seen = s.n, first_seen = s.first, "
            "last_seen = s.last, status = CASE WHEN s.last > now() - interval '7 days' "
            "THEN 'ongoing' ELSE 'resolved' END FROM (SELECT error_class_id, count(*) n, "
            "min(seen_at) first, max(seen_at) last FROM triage_attemptclassification "
            "GROUP BY error_class_id) s WHERE s.error_class_id = e.id"
        )
        cursor.execute(
            "CREATE TABLE bench_meta (k text PRIMARY KEY, v text); "
            "INSERT INTO bench_meta VALUES ('generated_at', now()::text)"
        )
    connection.close()
    psql("VACUUM ANALYZE", database_url.rsplit("/", 1)[1])
    rows["copy_s"] = round(generated_s)
    rows["index_s"] = round(time.monotonic() - t1)
    return rows


# --- timing ------------------------------------------------------------------------


def _items(client, user):
    """(name, target_ms, callable) for every timed page and call."""
    from django.db.models import Count

    from prodmon.models import Attempt, Campaign, Node, Stage
    from prodmon.progress.estimates import campaign_estimate
    from triage import services as triage_services

    big = (
        Campaign.objects.annotate(n=Count("stages__jobs")).order_by("-n").values_list("pk", "n")[0]
    )
    campaign = Campaign.objects.get(pk=big[0])
    stage = Stage.objects.filter(campaign=campaign).order_by("-expected_jobs").first()
    site = Node.objects.values("site").annotate(n=Count("pk")).order_by("-n")[0]["site"]
    ended = (
        Attempt.objects.filter(status="failed", node__isnull=False)
        .order_by("-ended_at")
        .values_list("pk", flat=True)
        .first()
    )

    def get(path, expect=b""):
        def call():
            response = client.get(path, HTTP_HOST="127.0.0.1")
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}")
            if expect and expect not in response.content:
                raise RuntimeError(f"{path}: {expect!r} not in the page")

        return call

    return [
        ("campaign list (dashboard)", 300, get("/", b"mc23-")),
        (f"campaign dashboard ({big[1]} jobs)", 300, get(f"/campaigns/{campaign.pk}/", b"evgen")),
        ("error summary (7 d)", 300, get("/errors/", b"[E000]")),
        ("error summary API (7 d)", 300, get("/api/v1/errors/", b"E000")),
        ("job table", 200, get("/jobs/", b"Last exit")),
        ("job table ?state=failed", 200, get("/jobs/?state=failed", b"failed")),
        (
            "job table ?stage&state=running",
            200,
            get(f"/jobs/?stage={stage.pk}&state=running", b"running"),
        ),
        (f"job table ?site={site}", 200, get(f"/jobs/?site={site}", site.encode())),
        ("job table sorted by key, page 50", 200, get("/jobs/?sort=key&page=50", b"Last exit")),
        ("jobs API ?state=failed", 200, get("/api/v1/jobs/?state=failed")),
        ("node health (24 h)", 300, get("/nodes/", b"SITE-")),
        ("log search 'cvmfs'", 500, get("/logs/search?q=cvmfs", b"cvmfs")),
        ("log search API 'bad_alloc'", 500, get("/api/v1/logs/search?q=bad_alloc", b"bad_alloc")),
        (
            'log search "unable to open"',
            500,
            get("/api/v1/logs/search?q=%22unable+to+open%22", b"unable to open"),
        ),
        ("black-hole scan (sweep)", 1000, triage_services.node_health_sweep),
        (
            "black-hole check of one node",
            1000,
            lambda: triage_services.node_health_update(attempt_id=ended),
        ),
        # No target in the issue: pages read it from the cache (the refresher).
        (
            "ETA computation (largest campaign)",
            None,
            lambda: campaign_estimate(campaign=campaign, use_cache=False),
        ),
    ]


def time_items(repeat: int, cold_repeat: int, only: str = "") -> list[tuple[str, int, list, list]]:
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    user = get_user_model().objects.get(username="bench")
    client = Client()
    client.force_login(user)
    results = []
    refreshed = False
    for name, target, call in _items(client, user):
        if only and only not in name:
            continue
        cold, warm, cpu = [], [], []
        for _ in range(cold_repeat):
            cache.clear()
            connection.close()
            t = time.perf_counter()
            call()
            cold.append((time.perf_counter() - t) * 1000)
        if name.startswith("campaign") and not refreshed:
            # Warm campaign pages: what the beat task leaves in the cache.
            from prodmon.progress.estimates import campaigns_estimate_refresh

            t = time.perf_counter()
            n = campaigns_estimate_refresh()
            print(
                f"  (estimates refresher, the beat task: {n} active campaigns in "
                f"{time.perf_counter() - t:.1f} s)",
                flush=True,
            )
            refreshed = True
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            call()
            warm.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        results.append((name, target, cold, warm))
        worst = max(percentile(cold, 95), percentile(warm, 95))
        verdict = "no target" if target is None else "met" if worst <= target else "MISSED"
        print(
            f"  {name:<40} cold p50={percentile(cold, 50):8.1f} p95={percentile(cold, 95):8.1f}"
            f"   warm p50={percentile(warm, 50):8.1f} p95={percentile(warm, 95):8.1f} ms"
            f" (python cpu p50 {percentile(cpu, 50):6.1f})   target {target or '-'} ms: {verdict}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale 0.01, few repeats (< 1 min)")
    parser.add_argument("--reuse", action="store_true", help="time the existing database")
    parser.add_argument("--scale", type=float, default=None, help="1 = 1 M jobs (default)")
    parser.add_argument("--repeat", type=int, default=None, help="warm calls per item")
    parser.add_argument("--generate-only", action="store_true", help="load, do not time")
    parser.add_argument("--only", default="", help="time only items whose name contains this")
    parser.add_argument("--cold", type=int, default=None, help="cold calls per item (5; 2 quick)")
    args = parser.parse_args()
    scale = args.scale if args.scale is not None else (0.01 if args.quick else 1.0)
    repeat = args.repeat or (5 if args.quick else 20)
    cold_repeat = args.cold or (2 if args.quick else 5)
    db = _db_name(args.quick)
    if args.scale is not None and not args.quick and args.scale != 1.0:
        db = f"prodmon_bench_pages_{str(args.scale).replace('.', '_')}"
    sizes = _scaled(scale)
    database_url = f"{PG_ADMIN_URL}/{db}"
    print(
        f"config: scale {scale} ({sizes['jobs']} jobs, ~{sizes['attempts']} attempts, "
        f"~{sizes['lines']} log lines, {sizes['nodes']} nodes at {sizes['sites']} sites, "
        f"{CAMPAIGNS} campaigns x {len(STAGE_NAMES)} stages, {ERROR_CLASSES} error classes), "
        f"PostgreSQL {database_url}, cache {CACHE_URL}, Django test client in-process with "
        f"production settings, {cold_repeat} cold + {repeat} warm calls per item"
    )
    print(machine())
    _env(database_url)
    import django

    reuse = False
    if args.reuse:
        out = io.StringIO()
        try:
            import psycopg

            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT v FROM bench_meta WHERE k = 'generated_at'").fetchone()
                out.write(row[0])
                reuse = True
        except Exception as exc:  # noqa: BLE001 - missing database or table: generate
            print(f"reuse: no complete database ({exc.__class__.__name__}); generating")
    if reuse:
        print(f"reusing {db}, generated at {out.getvalue()}")
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)  # new indexes, backfills
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE prodmon_job")
    else:
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        psql(f'CREATE DATABASE "{db}"')
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        t = time.monotonic()
        rows = generate(database_url, sizes)
        print(f"generated in {time.monotonic() - t:.0f} s: {rows}", flush=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples::bigint FROM pg_class WHERE relname IN "
            "('prodmon_job', 'prodmon_attempt', 'logserver_logline', "
            "'triage_attemptclassification') ORDER BY relname"
        )
        print("tables (estimated rows): " + ", ".join(f"{n}={c}" for n, c in cursor.fetchall()))
    if args.generate_only:
        return
    results = time_items(repeat, cold_repeat, args.only)
    targeted = [r for r in results if r[1] is not None]
    if not targeted:
        return
    worst = max(targeted, key=lambda r: max(percentile(r[2], 95), percentile(r[3], 95)) / r[1])
    name, target, cold, warm = worst
    missed = [r[0] for r in targeted if max(percentile(r[2], 95), percentile(r[3], 95)) > r[1]]
    print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    p95 = max(percentile(cold, 95), percentile(warm, 95))
    subprocess.run(["redis-cli", "-u", CACHE_URL, "FLUSHDB"], capture_output=True)
    print(f"worst={name.replace(' ', '_')} p95_ms={p95:.1f}")


if __name__ == "__main__":
    main()
