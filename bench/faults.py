"""Nothing lost under load and faults.

    python -m bench.faults [--quick] [--scenario overload|kill-web|kill-worker|restart-db ...]

Emulated worker nodes post through the reporter's own delivery code
(logserver/prodmon_report.py: Sender and Spool, with unique event ids,
backoff, Retry-After and spooling) at twice the server's measured capacity,
against gunicorn and PostgreSQL with the production settings and a real
Celery worker on Redis. Each scenario injects one fault while the load runs:

- overload:     nothing else; the server must shed (429/503), never 500;
- kill-web:     kill -9 one gunicorn worker;
- kill-worker:  kill -9 the Celery worker, then start a new one;
- kill-drain:   kill -9 the ingest drain (`manage.py ingest_drain`), then
                start a new one;
- restart-db:   restart PostgreSQL.

The server runs the production default, PRODMON_INGEST_MODE=queued, with one
ingest drain process. When the load stops and the clients have drained their
spools, every event a client produced must be in the database exactly once
and, once the ingest queue is empty, applied; /metrics must count no 5xx
other than 503.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

from bench._common import (
    BROKER_URL,
    ROOT,
    fresh_database,
    gunicorn,
    machine,
    manage,
    production_env,
)
from logserver import prodmon_report as reporter

SETUP = """
from prodmon import services
from logserver.services import token_create
e = services.experiment_create(name="faults")
c = services.campaign_create(experiment=e, name="mc")
services.stage_create(campaign=c, name="sim", expected_jobs=100000)
# The identity bench.ingest's capacity probe posts to.
services.stage_create(campaign=services.campaign_create(experiment=e, name="mc23"), name="simul")
print(token_create(experiment=e, name="nodes", scopes=["ingest"])[1])
"""
TAIL = "x" * 1023 + "\n"
SCENARIOS = ("overload", "kill-web", "kill-worker", "kill-drain", "restart-db")


class Node(threading.Thread):
    """One emulated worker node: attempts of start, heartbeats, end, at a pace."""

    def __init__(self, url, token, spool_dir, interval, stop, name):
        super().__init__(name=name, daemon=True)
        self.spool = reporter.Spool(spool_dir, token)
        self.sender = reporter.Sender(url, token, self.spool, http_timeout=10)
        self.interval = interval
        self.stop = stop
        self.produced: list[str] = []

    def _submit(self, kind, body):
        body["event_id"] = uuid.uuid4().hex
        body["time"] = reporter.utc_now_iso()
        self.produced.append(body["event_id"])
        self.sender.submit(kind, body)

    def run(self):
        self.sender.start()
        n = 0
        while not self.stop.is_set():
            attempt = str(uuid.uuid4())
            ident = {
                "campaign": "mc",
                "stage": "sim",
                "job": f"{self.name}-{n}",
                "attempt": attempt,
            }
            events = [("start", {**ident, "host": f"{self.name}.example", "site": "SITE"})]
            events += [
                (
                    "heartbeat",
                    {
                        **ident,
                        "metrics": {"cpu_s": 1.0 + i},
                        "log": {"offset": i * len(TAIL), "data": TAIL},
                    },
                )
                for i in range(2)
            ]
            events.append(("end", {**ident, "exit_code": random.choice([0, 0, 0, 1])}))
            for kind, body in events:
                if self.stop.is_set() and kind != "end":
                    break
                self._submit(kind, body)
                time.sleep(self.interval * random.uniform(0.5, 1.5))
            n += 1

    def drain(self, timeout):
        return self.sender.finish(timeout)


@contextmanager
def restartable(env, argv: list[str]):
    """A process of ours (`argv`), and a function that starts it again after
    a scenario killed it. Yields ({"proc": the current process}, start)."""
    holder = {}

    def start():
        holder["proc"] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return holder["proc"]

    start()
    try:
        yield holder, start
    finally:
        holder["proc"].terminate()
        try:
            holder["proc"].wait(timeout=15)
        except subprocess.TimeoutExpired:
            holder["proc"].kill()


def celery_worker(env):
    return restartable(
        env,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "prodmon",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ],
    )


def ingest_drain(env):
    return restartable(env, [sys.executable, "manage.py", "ingest_drain"])


def _metric_by_status(url, name) -> dict[str, float]:
    body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith(name + "{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            out[status] = out.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return out


def _server_errors(url) -> dict[str, float]:
    return _metric_by_status(url, "prodmon_http_errors_total")


def _ingest_statuses(url) -> dict[str, float]:
    return _metric_by_status(url, "prodmon_ingest_requests_total")


def _gunicorn_workers() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "prodmon.wsgi"], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    # The arbiter is the oldest; its children are the workers.
    children = []
    for pid in pids:
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid in pids:
            children.append(pid)
    return children


def _restart_postgres():
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )


def measure_capacity(database_url, url, token, seconds) -> float:
    """Events per second applied (accepted, then drained), as bench.ingest counts."""
    from bench.ingest import measured

    return measured(database_url, True, url, token, seconds)[0]


def run_scenario(name, url, token, env, workers, capacity, seconds, nodes):
    (worker, start_worker), (drain, start_drain) = workers
    stop = threading.Event()
    offered = 2 * capacity
    interval = nodes / offered
    spool_root = Path(tempfile.mkdtemp(prefix=f"prodmon-faults-{name}-"))
    fleet = [
        Node(url, token, str(spool_root / f"n{i}"), interval, stop, f"{name}-n{i}")
        for i in range(nodes)
    ]
    errors_before = _server_errors(url)
    statuses_before = _ingest_statuses(url)
    for node in fleet:
        node.start()
    time.sleep(seconds / 3)
    fault = "none"
    if name == "kill-web":
        victims = _gunicorn_workers()
        os.kill(victims[0], signal.SIGKILL)
        fault = f"kill -9 gunicorn worker {victims[0]}"
    elif name == "kill-worker":
        victim = worker["proc"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(1)
        start_worker()
        fault = f"kill -9 celery worker {victim.pid}, started {worker['proc'].pid}"
    elif name == "kill-drain":
        victim = drain["proc"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(1)
        start_drain()
        fault = f"kill -9 ingest drain {victim.pid}, started {drain['proc'].pid}"
    elif name == "restart-db":
        _restart_postgres()
        fault = "PostgreSQL restarted"
    time.sleep(seconds * 2 / 3)
    stop.set()
    for node in fleet:
        node.join(timeout=30)
    stats = [node.drain(timeout=120) for node in fleet]
    produced = [eid for node in fleet for eid in node.produced]
    errors_after = _server_errors(url)
    statuses_after = _ingest_statuses(url)
    answered = {k: int(v - statuses_before.get(k, 0)) for k, v in statuses_after.items()}
    answered = {k: v for k, v in sorted(answered.items()) if v}
    server_5xx = {
        s: errors_after.get(s, 0) - errors_before.get(s, 0) for s in errors_after if s != "503"
    }
    server_5xx = {s: n for s, n in server_5xx.items() if n}
    # The ids go through a file: at a few hundred events/s they outgrow the
    # kernel's limit on one command-line argument (128 KiB).
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(produced, f)
    try:
        check = manage(
            env,
            "shell",
            "-c",
            (
                "import json,sys,time\n"
                "from logserver.models import IngestEvent\n"
                f"ids = json.load(open({f.name!r}))\n"
                "found = IngestEvent.objects.filter(experiment__name='faults', event_id__in=ids)\n"
                "deadline = time.monotonic() + 120\n"
                "while found.filter(state='queued').exists() and time.monotonic() < deadline:\n"
                "    time.sleep(0.2)\n"
                "print(found.count(), len(set(found.values_list('event_id', flat=True))),\n"
                "      found.filter(state='applied').count())\n"
            ),
        ).split()
    finally:
        os.unlink(f.name)
    stored, distinct, applied = int(check[-3]), int(check[-2]), int(check[-1])
    spooled_left = sum(node.spool.pending for node in fleet)
    totals = {k: sum(s[k] for s in stats) for k in stats[0]}
    ok = (
        stored == distinct == applied == len(produced)
        and not server_5xx
        and totals["dropped"] == 0
        and totals["rejected"] == 0
        and spooled_left == 0
    )
    print(
        f"scenario={name} fault={fault!r} offered={offered:.0f}/s nodes={nodes} "
        f"produced={len(produced)} stored={stored} distinct={distinct} applied={applied} "
        f"client={totals} server_answers={answered} server_5xx_not_503={server_5xx} "
        f"left_in_spools={spooled_left} "
        f"-> {'OK' if ok else 'FAIL'}"
    )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--database-url", help="use this database (tests pass theirs)")
    args = parser.parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    seconds = 6 if args.quick else 20
    nodes = 16 if args.quick else 48
    print(
        f"config: gunicorn 2 workers x 4 threads, production settings (queued ingest, "
        "one ingest_drain process), PostgreSQL, "
        f"Celery worker on {BROKER_URL}, {nodes} emulated nodes through the reporter's "
        f"Sender/Spool at 2x measured capacity, {seconds} s per scenario"
    )
    print(machine())
    database_url = args.database_url or fresh_database("prodmon_bench_faults")
    env = production_env(database_url, PRODMON_ACCESS_LOG="off")
    if not args.database_url:
        manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "shell", "-c", SETUP).strip().splitlines()[-1]
    results = {}
    with gunicorn(env, 2, 4) as url, ingest_drain(env):
        capacity = measure_capacity(database_url, url, token, 3 if args.quick else 8)
    # Shed at the measured capacity, as an operator would configure it.
    env = dict(env, PRODMON_INGEST_CAPACITY=str(max(int(capacity), 1)))
    print(f"measured capacity: {capacity:.0f} events/s; PRODMON_INGEST_CAPACITY set to it")
    with (
        gunicorn(env, 2, 4) as url,
        celery_worker(env) as worker,
        ingest_drain(env) as drain,
    ):
        for name in scenarios:
            results[name] = run_scenario(
                name, url, token, env, (worker, drain), capacity, seconds, nodes
            )
    passed = sum(results.values())
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
