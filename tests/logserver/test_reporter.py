"""The worker-node reporter end to end: real payloads wrapped by a real
reporter subprocess, posting to a live test server."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from logserver import prodmon_report
from logserver.models import IngestEvent, LogChunk
from prodmon import services
from prodmon.models import Attempt, OutputFile
from tests.factories import make_token

REPORTER = Path(__file__).resolve().parents[2] / "logserver" / "prodmon_report.py"
PYTHON36 = Path("/root/.pyenv/versions/3.6.15/bin/python")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stage(transactional_db):
    experiment = services.experiment_create(name="dune")
    campaign = services.campaign_create(experiment=experiment, name="mc", title="MC")
    return services.stage_create(campaign=campaign, name="gen", command="lar -c gen.fcl")


@pytest.fixture
def token(stage):
    return make_token(stage.campaign.experiment)[1]


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str
    attempt_uid: uuid.UUID
    seconds: float

    @property
    def summary(self) -> dict[str, int]:
        lines = [line for line in self.stderr.splitlines() if "prodmon-report: done:" in line]
        assert lines, self.stderr
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}

    @property
    def attempt(self) -> Attempt:
        return Attempt.objects.select_related("job", "node").get(uid=self.attempt_uid)


@pytest.fixture
def reporter_env(live_server, token, workdir, spool_dir):
    def build(**overrides) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PRODMON_") and not k.lower().endswith("_proxy")
        }
        env.update(
            PRODMON_URL=live_server.url,
            PRODMON_TOKEN=token,
            PRODMON_CAMPAIGN="mc",
            PRODMON_STAGE="gen",
            PRODMON_JOB="input_001.root",
            PRODMON_ATTEMPT=str(uuid.uuid4()),
            PRODMON_SITE="FNAL",
            PRODMON_HOST="wn042.fnal.gov",
            PRODMON_BATCH_ID="1234567.0",
            PRODMON_HEARTBEAT_SECONDS="0.3",
            PRODMON_WORKDIR=str(workdir),
            PRODMON_SPOOL_DIR=str(spool_dir),
            PRODMON_DRAIN_TIMEOUT="20",
        )
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    return build


def reporter_argv(command, *, python=sys.executable, options=()):
    return [str(python), str(REPORTER), *options, "--", *command]


@pytest.fixture
def report(reporter_env):
    def run(command, *, python=sys.executable, options=(), **env_overrides) -> Finished:
        env = reporter_env(**env_overrides)
        began = time.monotonic()
        proc = subprocess.run(
            reporter_argv(command, python=python, options=options),
            env=env,
            capture_output=True,
            timeout=60,
        )
        return Finished(
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr.decode("utf-8", "replace"),
            attempt_uid=uuid.UUID(env["PRODMON_ATTEMPT"]),
            seconds=time.monotonic() - began,
        )

    return run


def stored_log(attempt: Attempt) -> bytes:
    """The attempt's log chunks joined, asserting they leave no gap and no overlap."""
    data, position = b"", 0
    for chunk in LogChunk.objects.filter(attempt=attempt).order_by("offset"):
        assert chunk.offset == position, f"gap or overlap at {position}"
        data += bytes(chunk.data)
        position += chunk.length
    return data


def assert_every_event_arrived_once(finished: Finished) -> None:
    summary = finished.summary
    stored = IngestEvent.objects.filter(attempt=finished.attempt).count()
    assert stored == summary["produced"]
    assert summary["sent"] == summary["produced"]
    assert summary["spooled"] == summary["rejected"] == summary["dropped"] == 0


def spooled_files(spool_dir: Path) -> list[Path]:
    if not spool_dir.exists():
        return []
    return [p for p in spool_dir.iterdir() if p.suffix == ".jsonl" and p.stat().st_size]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpForwarder:
    """A tiny TCP proxy on 127.0.0.1:`port` to `target`: the server coming back."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.port = port
        self.target = target
        self.stopping = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def start(self) -> None:
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other direction closed both ends


def live_target(live_server) -> tuple[str, int]:
    parts = urlsplit(live_server.url)
    return ("127.0.0.1" if parts.hostname == "localhost" else parts.hostname, parts.port)


def ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th') }"


SUCCESS_PAYLOAD = r"""
import sys, time
for i in range(1, 6):
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(i, "th")
    print(f"Begin processing the {i}{suffix} record. run: 1 subRun: 3 event: {i}", flush=True)
    sum(range(300000))
    time.sleep(0.15)
print("%MSG-w MemoryCheck:  event 5 VSIZE 512 RSS 300", file=sys.stderr, flush=True)
print("Art has completed and will exit with status 0.", flush=True)
"""
SUCCESS_OUTPUT = (
    "".join(
        f"Begin processing the {ordinal(i)} record. run: 1 subRun: 3 event: {i}\n"
        for i in range(1, 6)
    )
    + "%MSG-w MemoryCheck:  event 5 VSIZE 512 RSS 300\n"
    + "Art has completed and will exit with status 0.\n"
).encode()


@pytest.mark.parametrize(
    "python",
    [
        pytest.param(sys.executable, id="current-python"),
        pytest.param(
            PYTHON36,
            id="python3.6",
            marks=pytest.mark.skipif(
                not PYTHON36.exists(), reason=f"no Python 3.6 interpreter at {PYTHON36}"
            ),
        ),
    ],
)
def test_it_reports_a_successful_payload(report, python):
    finished = report([sys.executable, "-c", SUCCESS_PAYLOAD], python=python)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == SUCCESS_OUTPUT  # still visible in the batch log
    attempt = finished.attempt
    assert attempt.status == Attempt.Status.SUCCEEDED
    assert (attempt.exit_code, attempt.signal) == (0, None)
    assert attempt.job.key == "input_001.root"
    assert attempt.batch_id == "1234567.0"
    assert (attempt.node.hostname, attempt.node.site) == ("wn042.fnal.gov", "FNAL")
    assert attempt.node.properties["cores"] >= 1
    assert "kernel" in attempt.node.properties
    assert attempt.wall_s > 0.5
    assert attempt.cpu_s > 0
    assert attempt.peak_rss_bytes > 1024 * 1024
    assert attempt.disk_bytes == 0
    assert attempt.events_processed == 5
    assert attempt.log_bytes == len(SUCCESS_OUTPUT)
    assert stored_log(attempt) == SUCCESS_OUTPUT
    assert_every_event_arrived_once(finished)
    assert finished.summary["produced"] >= 3  # start, heartbeats, end


def test_it_passes_a_non_zero_exit_code_through(report):
    script = 'echo "opening input_001.root"; echo "fatal: file not found" >&2; exit 3'
    finished = report(["sh", "-c", script])

    assert finished.returncode == 3
    attempt = finished.attempt
    assert attempt.status == Attempt.Status.FAILED
    assert (attempt.exit_code, attempt.signal) == (3, None)
    assert stored_log(attempt) == b"opening input_001.root\nfatal: file not found\n"
    assert_every_event_arrived_once(finished)


@pytest.mark.parametrize(("name", "number"), [("SEGV", 11), ("KILL", 9)])
def test_it_reports_death_by_signal_and_exits_128_plus_n(report, name, number):
    finished = report(["sh", "-c", f"ulimit -c 0; echo 'about to die'; kill -{name} $$"])

    assert finished.returncode == 128 + number
    attempt = finished.attempt
    assert attempt.status == Attempt.Status.FAILED
    assert (attempt.exit_code, attempt.signal) == (None, number)
    assert stored_log(attempt) == b"about to die\n"
    assert_every_event_arrived_once(finished)


def test_it_reports_the_outputs_its_globs_match(report, workdir):
    script = (
        "mkdir -p out; head -c 70000 /dev/urandom > out/reco_1.root; "
        "printf 'small' > out/reco_2.root; echo notes > notes.txt; echo written"
    )
    finished = report(["sh", "-c", script], PRODMON_OUTPUTS="out/*.root, hist*.root")

    assert finished.returncode == 0
    rows = {o.name: o for o in OutputFile.objects.filter(attempt=finished.attempt)}
    assert sorted(rows) == ["out/reco_1.root", "out/reco_2.root"]
    for name, row in rows.items():
        content = (workdir / name).read_bytes()
        assert row.size == len(content)
        assert row.checksum == f"adler32:{zlib.adler32(content):08x}"
    assert finished.attempt.output_bytes == 70000 + 5
    assert finished.attempt.disk_bytes == 70000 + 5 + len(b"notes\n")


def test_it_sends_bytes_that_are_not_utf8_exactly(report):
    finished = report(["sh", "-c", r"printf 'caf\351 \000nul\nok\n'"])

    assert finished.returncode == 0
    assert stored_log(finished.attempt) == b"caf\xe9 \x00nul\nok\n"
    assert finished.stdout == b"caf\xe9 \x00nul\nok\n"


def test_it_keeps_the_newest_bytes_when_a_heartbeat_overflows(report):
    script = "import sys; sys.stdout.write(''.join('line %05d\\n' % i for i in range(2000)))"
    finished = report([sys.executable, "-c", script], PRODMON_TAIL_BYTES="1000")

    expected = "".join(f"line {i:05d}\n" for i in range(2000)).encode()
    assert finished.stdout == expected
    attempt = finished.attempt
    assert attempt.log_bytes == len(expected)
    chunks = list(LogChunk.objects.filter(attempt=attempt).order_by("offset"))
    assert sum(c.length for c in chunks) <= 2000
    assert bytes(chunks[-1].data) == expected[chunks[-1].offset :]
    assert expected.endswith(bytes(chunks[-1].data))


TICKING_PAYLOAD = r"""
import time
for i in range(15):
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
"""
TICKING_OUTPUT = "".join(f"tick {i}\n" for i in range(15)).encode()


def test_it_delivers_everything_once_the_server_comes_back(reporter_env, live_server, spool_dir):
    port = free_port()
    env = reporter_env(PRODMON_URL=f"http://127.0.0.1:{port}")
    proc = subprocess.Popen(
        reporter_argv([sys.executable, "-c", TICKING_PAYLOAD]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)
    assert spooled_files(spool_dir), "events made while the server was down are spooled"
    forwarder = TcpForwarder(port, live_target(live_server))
    forwarder.start()
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        forwarder.stop()
    finished = Finished(
        proc.returncode, stdout, stderr.decode(), uuid.UUID(env["PRODMON_ATTEMPT"]), 0
    )

    assert finished.returncode == 0, finished.stderr
    assert "server not reachable" in finished.stderr
    assert "server reachable again" in finished.stderr
    assert finished.attempt.status == Attempt.Status.SUCCEEDED
    assert stored_log(finished.attempt) == TICKING_OUTPUT
    assert_every_event_arrived_once(finished)
    assert finished.summary["produced"] >= 6
    assert spooled_files(spool_dir) == []


def test_it_flushes_events_spooled_by_an_earlier_run(report, reporter_env, live_server, spool_dir):
    port = free_port()
    first = report(
        ["sh", "-c", "echo from an earlier run; exit 2"],
        PRODMON_URL=f"http://127.0.0.1:{port}",
        PRODMON_DRAIN_TIMEOUT="0.5",
    )
    assert first.returncode == 2
    assert first.summary["spooled"] == first.summary["produced"] >= 2
    assert not Attempt.objects.filter(uid=first.attempt_uid).exists()

    forwarder = TcpForwarder(port, live_target(live_server))
    forwarder.start()
    try:
        flushed = subprocess.run(
            [sys.executable, str(REPORTER), "--flush"],
            env=reporter_env(PRODMON_URL=f"http://127.0.0.1:{port}"),
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        forwarder.stop()

    assert flushed.returncode == 0, flushed.stderr
    summary = Finished(0, b"", flushed.stderr.decode(), first.attempt_uid, 0).summary
    assert summary["recovered"] == summary["sent"] == first.summary["produced"]
    attempt = first.attempt
    assert (attempt.status, attempt.exit_code) == (Attempt.Status.FAILED, 2)
    assert stored_log(attempt) == b"from an earlier run\n"
    assert IngestEvent.objects.filter(attempt=attempt).count() == first.summary["produced"]
    assert spooled_files(spool_dir) == []


@pytest.mark.parametrize(
    ("overrides", "expected_note"),
    [
        pytest.param({"PRODMON_TOKEN": "pm_not-a-real-token"}, "(401", id="wrong-token"),
        pytest.param({"PRODMON_URL": "http://127.0.0.1:9"}, "not reachable", id="nothing-there"),
        pytest.param({"PRODMON_URL": "http://prodmon.invalid"}, "not reachable", id="no-dns"),
        pytest.param({"PRODMON_URL": "prodmon.example.org"}, "unmonitored", id="not-a-url"),
        pytest.param({"PRODMON_CAMPAIGN": None}, "unmonitored", id="no-campaign"),
        pytest.param(
            {"PRODMON_HEARTBEAT_SECONDS": "x", "PRODMON_CORES": "lots"},
            "is not a number",
            id="bad-numbers",
        ),
    ],
)
def test_monitoring_failure_never_hurts_the_payload(report, overrides, expected_note):
    finished = report(
        ["sh", "-c", "for i in 1 2 3; do echo step $i; sleep 0.2; done; exit 5"],
        PRODMON_DRAIN_TIMEOUT="1",
        **overrides,
    )

    assert finished.returncode == 5, finished.stderr
    assert finished.stdout == b"step 1\nstep 2\nstep 3\n"
    assert expected_note in finished.stderr
    assert finished.seconds < 15


def test_it_forwards_sigterm_to_the_payload(reporter_env):
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('caught SIGTERM, closing files', flush=True)\n"
        "    sys.exit(42)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    env = reporter_env()
    proc = subprocess.Popen(
        reporter_argv([sys.executable, "-c", script]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)  # to the reporter only, not its process group
    rest, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 42, stderr
    assert rest == b"caught SIGTERM, closing files\n"
    attempt = Attempt.objects.get(uid=env["PRODMON_ATTEMPT"])
    assert (attempt.status, attempt.exit_code) == (Attempt.Status.FAILED, 42)
    assert stored_log(attempt) == b"ready\ncaught SIGTERM, closing files\n"


def test_it_reports_a_payload_that_cannot_start(report):
    finished = report(["/nonexistent/lar", "-c", "gen.fcl"])

    assert finished.returncode == 127
    attempt = finished.attempt
    assert (attempt.status, attempt.exit_code) == (Attempt.Status.FAILED, 127)
    assert b"cannot start /nonexistent/lar" in stored_log(attempt)


def test_it_refuses_to_run_without_a_payload():
    proc = subprocess.run(
        [sys.executable, str(REPORTER), "--url", "http://x"], stderr=subprocess.PIPE, timeout=30
    )
    assert proc.returncode == 2
    assert b"no payload" in proc.stderr


def _spooled_event(n: int) -> bytes:
    return f'{{"type":"heartbeat","event_id":"event-{n:04d}"}}'.encode()


def test_its_spool_is_adopted_only_once_its_run_has_ended(tmp_path):
    mine = prodmon_report.Spool(str(tmp_path), "pm_token-a")
    mine.append([_spooled_event(n) for n in range(5)])
    items, end, lines = mine.read_batch(max_events=2, max_bytes=1 << 20)
    assert [i[1] for i in items] == ["event-0000", "event-0001"]
    mine.ack(end, lines)

    other_token = prodmon_report.Spool(str(tmp_path), "pm_token-b")
    next_run = prodmon_report.Spool(str(tmp_path), "pm_token-a")
    assert next_run.adopt_orphans() == 0  # locked: its run is alive

    assert mine.close() == 3  # compacted to what was not delivered
    with open(mine.path, "ab") as spool_file:
        spool_file.write(b'{"type":"end","event_id":"torn-by-a-cr')  # a crash mid-write
    assert other_token.adopt_orphans() == 0  # made for another token: left alone
    assert next_run.adopt_orphans() == 3
    items, end, lines = next_run.read_batch(max_events=100, max_bytes=1 << 20)
    assert [i[1] for i in items] == ["event-0002", "event-0003", "event-0004"]
    next_run.ack(end, lines)
    assert next_run.close() == 0
    assert list(tmp_path.iterdir()) == []
