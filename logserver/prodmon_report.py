#!/usr/bin/env python3
"""prodmon-report: run a batch job's payload and report it to a prodmon server.

    prodmon-report [options] -- payload [args ...]
    prodmon-report --flush [options]

The payload runs as a child process. Its stdout and stderr are combined into
one stream that is copied through to this program's stdout, so the batch
system's log still shows it, and that is also sent to the server. Every
--interval seconds a heartbeat carries the new log bytes and metrics read from
/proc. At the end the exit code or signal, the final metrics, the declared
outputs (size and adler32) and the rest of the log are sent. Log bytes travel
with their offset in the stream; when the payload writes more than
--tail-bytes between two heartbeats, only the newest bytes are sent and the
server shows a gap. events_processed is the highest N of art/cmsRun's "Begin
processing the Nth record" lines.

One file, standard library only, Python >= 3.6 on Linux. Worker nodes can
fetch it from the server: curl -o prodmon-report <server>/reporter/prodmon-report.py

Options, each defaulting from an environment variable (the option wins):

  --url URL            PRODMON_URL            server base URL, e.g. https://prodmon.example.org
  --token TOKEN        PRODMON_TOKEN          ingest token (pm_...)
  --token-file PATH    PRODMON_TOKEN_FILE     file holding the token; used when no token is given
  --campaign NAME      PRODMON_CAMPAIGN       campaign name
  --stage NAME         PRODMON_STAGE          stage name
  --job KEY            PRODMON_JOB            job key, e.g. the input file name
  --attempt UUID       PRODMON_ATTEMPT        attempt id; a new uuid4 when not given
  --site NAME          PRODMON_SITE           site, e.g. FNAL
  --host NAME          PRODMON_HOST           host name to report (default: socket.getfqdn())
  --batch-id ID        PRODMON_BATCH_ID       batch job id (default: $SLURM_JOB_ID, $PBS_JOBID,
                                              $LSB_JOBID or GlobalJobId from $_CONDOR_JOB_AD)
  --cores N            PRODMON_CORES          cores allocated to the job
  --interval S         PRODMON_HEARTBEAT_SECONDS  seconds between heartbeats (default 60)
  --outputs GLOBS      PRODMON_OUTPUTS        comma-separated globs relative to the workdir
  --workdir DIR        PRODMON_WORKDIR        directory the payload runs in (default: current)
  --spool-dir DIR      PRODMON_SPOOL_DIR      default ~/.prodmon-spool, or
                                              $TMPDIR/prodmon-spool-<uid> without a writable home
  --tail-bytes N       PRODMON_TAIL_BYTES     most log bytes per heartbeat (default 524288);
                                              keep it at or under the server's chunk limit (1 MiB)
  --drain-timeout S    PRODMON_DRAIN_TIMEOUT  seconds to wait for delivery at the end (default 60)
  --http-timeout S     PRODMON_HTTP_TIMEOUT   seconds per HTTP request (default 20)
  --ca-file PATH       PRODMON_CA_FILE        CA bundle file or directory for https
  --cvmfs-repos LIST   PRODMON_CVMFS_REPOS    CVMFS repositories to probe for the node record
  --flush                                     send what is spooled, then exit

Exit status. The payload's exit code, unchanged. When the payload dies from
signal N, the signal is reported and prodmon-report exits with 128+N (the
shell's convention: 137 for SIGKILL, 139 for SIGSEGV). 127 when the payload
cannot be found, 126 when it cannot be executed, 2 for a usage error without
a payload. --flush exits 0 when the spool is empty afterwards, else 75.

Never in the payload's way. Monitoring is best effort: a missing URL, token or
identity, a bad option value, an unreachable server, a rejected token or an
exception inside the reporter is printed once to stderr and monitoring
degrades or stops; the payload still runs, its output still flows, and its
exit code is still returned. SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1,
SIGUSR2 and SIGXCPU received by the reporter are forwarded to the payload
(which stays in the reporter's process group, so a batch system that signals
or kills the whole group reaches it directly too).

Delivery and the spool. Events are sent by a background thread, several at a
time through /api/v1/ingest/bulk/. Each carries a client-made event_id and the
server applies each id once, so re-sending is always safe. 201 and 200 are
acknowledgements. 429 and 503 are retried after their Retry-After; other 5xx,
408 and connection errors with exponential backoff and jitter. Any other 4xx
rejects the event: it is printed and dropped. A 401/403 (bad token) or a
redirect (wrong URL) stops delivery for the rest of the run; its events are
dropped, as the next request would be refused the same way.

While the server cannot be reached, events are appended to a spool file in
--spool-dir (JSON lines, one event a line, fsynced) and sent from there in
order once it answers. Each running reporter owns one file and holds a lock on
it. A file whose lock is free belongs to a run that has ended; the next run on
the node with the same token (or `prodmon-report --flush`) adopts its events
and sends them. File names start with a digest of the token, never the token
itself, so events are only re-sent with the token they were made for. Files
untouched for 14 days are deleted. At the end the reporter waits up to
--drain-timeout seconds for delivery (10 s after a SIGTERM), leaves the rest in
the spool and exits. The last stderr line sums up what happened:

    prodmon-report: done: produced=5 sent=5 accepted=5 duplicate=0 rejected=0
    dropped=0 recovered=0 spooled=0
"""

import os
import sys

# Run as a script from a source checkout (python logserver/prodmon_report.py),
# the script's directory comes first on sys.path, and the Django app's modules
# there (logserver/selectors.py) would shadow the standard library's.
if __name__ == "__main__" and sys.path:
    if os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]

import argparse
import base64
import datetime
import email.utils
import errno
import fcntl
import glob
import gzip
import hashlib
import http.client
import json
import platform
import random
import re
import resource
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib

PROG = "prodmon-report"
VERSION = "1.0"

DEFAULT_INTERVAL_S = 60.0
DEFAULT_TAIL_BYTES = 512 * 1024
DEFAULT_DRAIN_TIMEOUT_S = 60.0
DEFAULT_HTTP_TIMEOUT_S = 20.0
# After a SIGTERM the batch system usually follows with SIGKILL within ~30 s.
DRAIN_AFTER_SIGNAL_S = 10.0

BULK_MAX_EVENTS = 100
# Well under the server's 8 MiB body limit, even before gzip.
BULK_MAX_BYTES = 4 * 1024 * 1024
GZIP_MIN_BYTES = 16 * 1024
RESPONSE_MAX_BYTES = 1024 * 1024
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 300.0
MAX_REJECTION_MESSAGES = 10

SPOOL_MAX_BYTES = 256 * 1024 * 1024
SPOOL_MAX_AGE_S = 14 * 24 * 3600
SPOOL_TMP_MAX_AGE_S = 24 * 3600
# Events kept in memory when the spool cannot be written.
MEMORY_QUEUE_MAX_BYTES = 64 * 1024 * 1024

# Peak RSS is a max over samples, so sample more often than heartbeats.
SAMPLE_EVERY_MAX_S = 10.0
DISK_WALK_MAX_ENTRIES = 100000
MAX_OUTPUTS = 10000
MAX_NODE_STRING = 512

FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGXCPU")
# art and cmsRun: "Begin processing the 7th record. run: 1 subRun: 3 event: 7"
EVENTS_PREFIX = b"Begin processing the "
EVENTS_RE = re.compile(re.escape(EVENTS_PREFIX) + rb"(\d+)(?:st|nd|rd|th) record")

EXIT_USAGE = 2
EXIT_TEMPFAIL = 75
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

# (option, environment variable, default, metavar, help)
OPTIONS = (
    ("--url", "PRODMON_URL", None, "URL", "server base URL, e.g. https://prodmon.example.org"),
    ("--token", "PRODMON_TOKEN", None, "TOKEN", "ingest token (pm_...)"),
    ("--token-file", "PRODMON_TOKEN_FILE", None, "PATH", "file holding the ingest token"),
    ("--campaign", "PRODMON_CAMPAIGN", None, "NAME", "campaign name"),
    ("--stage", "PRODMON_STAGE", None, "NAME", "stage name"),
    ("--job", "PRODMON_JOB", None, "KEY", "job key, e.g. the input file name"),
    ("--attempt", "PRODMON_ATTEMPT", None, "UUID", "attempt id (default: a new uuid4)"),
    ("--site", "PRODMON_SITE", None, "NAME", "site name, e.g. FNAL"),
    ("--host", "PRODMON_HOST", None, "NAME", "host name to report (default: the FQDN)"),
    ("--batch-id", "PRODMON_BATCH_ID", None, "ID", "batch job id (default: from the batch env)"),
    ("--cores", "PRODMON_CORES", None, "N", "cores allocated to the job"),
    ("--interval", "PRODMON_HEARTBEAT_SECONDS", "60", "S", "seconds between heartbeats"),
    ("--outputs", "PRODMON_OUTPUTS", None, "GLOBS", "comma-separated output globs"),
    ("--workdir", "PRODMON_WORKDIR", None, "DIR", "directory to run the payload in"),
    ("--spool-dir", "PRODMON_SPOOL_DIR", None, "DIR", "where undelivered events wait"),
    ("--tail-bytes", "PRODMON_TAIL_BYTES", str(DEFAULT_TAIL_BYTES), "N", "log bytes/heartbeat"),
    ("--drain-timeout", "PRODMON_DRAIN_TIMEOUT", "60", "S", "seconds to deliver at the end"),
    ("--http-timeout", "PRODMON_HTTP_TIMEOUT", "20", "S", "seconds per HTTP request"),
    ("--ca-file", "PRODMON_CA_FILE", None, "PATH", "CA bundle file or directory for https"),
    ("--cvmfs-repos", "PRODMON_CVMFS_REPOS", None, "LIST", "CVMFS repositories to probe"),
)


# --- small helpers ---------------------------------------------------------------

_stderr_lock = threading.Lock()
_said_once = set()


def say(message):
    """One line on stderr. The payload's output goes to stdout, never here."""
    try:
        with _stderr_lock:
            sys.stderr.write(PROG + ": " + message + "\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone; there is nobody left to tell


def say_once(key, message):
    if key not in _said_once:
        _said_once.add(key)
        say(message)


def utc_now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to fsync a directory; the data is synced
    finally:
        os.close(fd)


class Guard(object):
    """Runs one monitoring step. A step that raises is reported once and
    switched off for the rest of the run; the payload never notices."""

    def __init__(self):
        self.broken = set()

    def __call__(self, name, fn, *args):
        if name in self.broken:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # monitoring must never take the payload down
            self.broken.add(name)
            say("%s failed (%s: %s); continuing without it" % (name, type(exc).__name__, exc))
            return None


# --- configuration ---------------------------------------------------------------


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options] -- payload [args ...]\n       %(prog)s --flush [options]",
        description="Run a batch job's payload and report it to a prodmon server.",
        epilog=("Exit status." + __doc__.split("\nExit status.", 1)[1]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, env, default, metavar, text in OPTIONS:
        suffix = " [$%s" % env + (", default %s]" % default if default else "]")
        parser.add_argument(flag, metavar=metavar, default=None, help=text + suffix)
    parser.add_argument("--flush", action="store_true", help="send what is spooled, then exit")
    parser.add_argument("--version", action="version", version="%(prog)s " + VERSION)
    return parser


def split_argv(argv):
    """(own options, payload command): everything after the first `--` is the payload."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


class Config(object):
    """Resolved settings. `missing` names what monitoring cannot do without;
    `warnings` are bad values that were replaced by defaults."""

    def __init__(self, values, environ):
        self.warnings = []
        self.missing = []
        self.url = (values["url"] or "").rstrip("/")
        if not self.url:
            self.missing.append("--url/PRODMON_URL")
        elif not self.url.startswith(("http://", "https://")):
            self.missing.append("a URL starting with http:// or https:// (got %r)" % self.url)
        self.token = self._token(values)
        self.campaign = values["campaign"] or ""
        self.stage = values["stage"] or ""
        self.job = values["job"] or ""
        for name in ("campaign", "stage", "job"):
            if not getattr(self, name):
                self.missing.append("--%s/PRODMON_%s" % (name, name.upper()))
        self.attempt = self._attempt(values["attempt"])
        self.site = values["site"] or ""
        self.host = values["host"] or ""
        self.batch_id = values["batch_id"] or batch_id_from_environment(environ)
        self.cores = self._number(values, "cores", int, None, 1, 4096)
        self.interval = self._number(values, "interval", float, DEFAULT_INTERVAL_S, 0.1, 86400)
        self.tail_bytes = self._number(values, "tail_bytes", int, DEFAULT_TAIL_BYTES, 1, 1 << 30)
        self.drain_timeout = self._number(
            values, "drain_timeout", float, DEFAULT_DRAIN_TIMEOUT_S, 0, 86400
        )
        self.http_timeout = self._number(
            values, "http_timeout", float, DEFAULT_HTTP_TIMEOUT_S, 0.1, 3600
        )
        self.outputs = [p.strip() for p in (values["outputs"] or "").split(",") if p.strip()]
        self.workdir = os.path.abspath(values["workdir"] or os.getcwd())
        self.spool_dir = values["spool_dir"] or default_spool_dir()
        self.ca_file = values["ca_file"] or ""
        repos = values["cvmfs_repos"] or ""
        self.cvmfs_repos = [r.strip() for r in repos.split(",") if r.strip()]

    def _token(self, values):
        if values["token"]:
            return values["token"].strip()
        path = values["token_file"]
        if not path:
            self.missing.append("--token/PRODMON_TOKEN or --token-file/PRODMON_TOKEN_FILE")
            return ""
        try:
            with open(path) as handle:
                token = handle.read().strip()
        except OSError as exc:
            self.missing.append("a readable token file (%s)" % exc)
            return ""
        if not token:
            self.missing.append("a token in %s (it is empty)" % path)
        return token

    def _attempt(self, value):
        if value:
            try:
                return str(uuid.UUID(value))
            except ValueError:
                self.warnings.append("attempt %r is not a UUID; using a new one" % value)
        return str(uuid.uuid4())

    def _number(self, values, name, kind, default, low, high):
        raw = values[name]
        if raw is None:
            return default
        try:
            number = kind(raw)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.warnings.append(
                "--%s %r is not a number in [%s, %s]; using %s"
                % (name.replace("_", "-"), raw, low, high, default)
            )
            return default
        return number


def resolve_values(args, environ):
    values = {}
    for flag, env, default, _metavar, _text in OPTIONS:
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest)
        if value is None:
            value = environ.get(env) or default
        values[dest] = value
    return values


def default_spool_dir():
    home = os.path.expanduser("~")
    if home != "~" and os.path.isdir(home) and os.access(home, os.W_OK):
        return os.path.join(home, ".prodmon-spool")
    return os.path.join(tempfile.gettempdir(), "prodmon-spool-%d" % os.getuid())


def batch_id_from_environment(environ):
    for name in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID"):
        if environ.get(name):
            return environ[name][:128]
    ad = environ.get("_CONDOR_JOB_AD")
    if ad:
        try:
            with open(ad) as handle:
                for line in handle:
                    key, _, value = line.partition("=")
                    if key.strip() == "GlobalJobId":
                        return value.strip().strip('"')[:128]
        except OSError:
            pass  # no job ad, no batch id: it is optional
    return ""


# --- the spool -------------------------------------------------------------------


def parse_spool_line(line):
    """(kind, event_id, raw) of one spooled event, or None when the line is damaged."""
    try:
        event = json.loads(line.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind, event_id = event.get("type"), event.get("event_id")
    if kind not in ("start", "heartbeat", "end") or not isinstance(event_id, str):
        return None
    return (kind, event_id, line)


class Spool(object):
    """Events not yet acknowledged, on disk: one JSON object a line, fsynced.

    This run's file is `<key>-<host>-<pid>-<random>.jsonl`, created lazily,
    and flock'ed for as long as the run lives; <key> is a digest of the token.
    Lines are consumed from the front (`read_offset`); the file is truncated
    once all of it was delivered and compacted when the run ends with some
    still pending. Only the sender thread touches it.
    """

    def __init__(self, directory, token):
        self.directory = directory
        self.key = hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
        self.fd = None
        self.path = None
        self.size = 0
        self.read_offset = 0
        self.pending = 0
        self.adopted = 0

    def _create(self):
        """Create, lock, then publish a file, so no other run ever sees it unlocked."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
        name = "%s-%s-%d-%s.jsonl" % (self.key, host, os.getpid(), uuid.uuid4().hex[:8])
        tmp = os.path.join(self.directory, ".tmp-" + name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = os.path.join(self.directory, name)
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass  # never created or already gone
            raise
        return fd, path

    def _ensure_open(self):
        if self.fd is None:
            self.fd, self.path = self._create()
            fsync_dir(self.directory)

    def append(self, raws):
        if not raws:
            return
        self._ensure_open()
        data = b"".join(raw + b"\n" for raw in raws)
        write_all(self.fd, data)
        os.fsync(self.fd)
        self.size += len(data)
        self.pending += len(raws)

    def read_batch(self, max_events, max_bytes):
        """The next events in file order: (items, end_offset, lines_consumed)."""
        items, consumed = [], 0
        remaining = self.size - self.read_offset
        block = os.pread(self.fd, min(remaining, max(max_bytes, 64 * 1024)), self.read_offset)
        while b"\n" not in block and len(block) < remaining:
            # One line longer than the block: read it whole.
            longer = os.pread(self.fd, min(remaining, 2 * len(block) + 1), self.read_offset)
            if len(longer) <= len(block):
                break
            block = longer
        if b"\n" not in block:
            say_once("spool-torn", "skipping a torn last line in %s" % self.path)
            return [], self.size, self.pending
        pos, used = 0, 0
        while consumed < max_events:
            newline = block.find(b"\n", pos)
            if newline < 0:
                break
            line = block[pos:newline]
            if items and used + len(line) > max_bytes:
                break
            pos = newline + 1
            consumed += 1
            item = parse_spool_line(line)
            if item is None:
                say_once("spool-damaged", "skipping a damaged line in %s" % self.path)
                continue
            items.append(item)
            used += len(line) + 1
        return items, self.read_offset + pos, consumed

    def ack(self, end_offset, lines):
        self.read_offset = end_offset
        self.pending = max(0, self.pending - lines)
        if self.read_offset >= self.size:
            os.ftruncate(self.fd, 0)
            self.size = self.read_offset = self.pending = 0

    def adopt_orphans(self):
        """Take over the events of ended runs that used the same token."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                say("cannot list the spool %s: %s" % (self.directory, exc))
            return 0
        adopted = 0
        for name in names:
            path = os.path.join(self.directory, name)
            if path == self.path:
                continue
            if name.startswith(".tmp-"):
                self._remove_stale_tmp(path)
            elif name.endswith(".jsonl"):
                adopted += self._adopt_file(path, mine=name.startswith(self.key + "-"))
        self.adopted += adopted
        return adopted

    def _remove_stale_tmp(self, path):
        try:
            if time.time() - os.stat(path).st_mtime > SPOOL_TMP_MAX_AGE_S:
                os.unlink(path)
        except OSError:
            pass  # another run removed or renamed it

    def _adopt_file(self, path, mine):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # its run is still alive
            st = os.fstat(fd)
            if st.st_nlink == 0:
                return 0  # another run adopted it while we waited
            if time.time() - st.st_mtime > SPOOL_MAX_AGE_S:
                os.unlink(path)
                say("deleted %s: no run delivered it within 14 days" % path)
                return 0
            if not mine:
                return 0
            lines = self._copy_complete_lines(fd)
            os.unlink(path)
            return lines
        finally:
            os.close(fd)

    def _copy_complete_lines(self, fd):
        """Append the complete lines of another file to ours; a torn last line is dropped."""
        carry, lines = b"", 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                self._ensure_open()
                write_all(self.fd, data[:cut])
                self.size += cut
                lines += data.count(b"\n", 0, cut)
        if lines:
            os.fsync(self.fd)
            self.pending += lines
        return lines

    def close(self):
        """Remove our file when all was delivered, else keep only the undelivered
        lines. The lock goes with the file descriptor. Returns the events left."""
        if self.fd is None:
            return 0
        left = self.pending
        try:
            if left == 0:
                os.unlink(self.path)
            elif self.read_offset > 0:
                self._compact()
        finally:
            os.close(self.fd)
            self.fd = None
        return left

    def _compact(self):
        fd, path = self._create()
        try:
            offset = self.read_offset
            while offset < self.size:
                block = os.pread(self.fd, min(1 << 20, self.size - offset), offset)
                if not block:
                    break
                write_all(fd, block)
                offset += len(block)
            os.fsync(fd)
            fsync_dir(self.directory)
            os.unlink(self.path)
            self.path = path
        finally:
            os.close(fd)


# --- delivery --------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a POST must not silently become a GET elsewhere


def _retry_after_seconds(headers):
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    try:
        return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    except TypeError:  # None, or a date without a zone
        return None


def _server_message(body):
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return text.strip().splitlines()[0][:200] if text.strip() else "(no message)"
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data)[:300]
    return str(data)[:300]


SENT, RETRY, STOP = "sent", "retry", "stop"


class Sender(object):
    """Delivers events from a background thread: straight to the server while
    it answers, through the spool while it does not (see the module docstring)."""

    def __init__(self, url, token, spool, http_timeout, ca_file=""):
        self.endpoint = url.rstrip("/") + "/api/v1/ingest/"
        self.token = token
        self.spool = spool
        self.spool_broken = spool is None
        self.http_timeout = http_timeout
        self.opener = self._opener(ca_file)
        self.cond = threading.Condition()
        self.queue = []
        self.queue_bytes = 0
        self.closing = False
        self.spool_first = False
        self.deadline = None
        self.done = False
        self.stopped = ""
        self.failures = 0
        self.retry_at = 0.0
        self.outage_since = None
        self.rejections = 0
        self.stats = {
            "produced": 0,
            "accepted": 0,
            "duplicate": 0,
            "rejected": 0,
            "dropped": 0,
            "recovered": 0,
            "spooled": 0,
        }
        self.thread = threading.Thread(target=self._run, name="prodmon-sender")
        self.thread.daemon = True

    @staticmethod
    def _opener(ca_file):
        handlers = [_NoRedirect()]
        if ca_file:
            if os.path.isdir(ca_file):
                context = ssl.create_default_context(capath=ca_file)
            else:
                context = ssl.create_default_context(cafile=ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def start(self):
        self.thread.start()

    # -- the producer side (main thread) --

    def submit(self, kind, event):
        body = dict(event)
        body["type"] = kind
        raw = json.dumps(body, separators=(",", ":")).encode("ascii")
        with self.cond:
            self.stats["produced"] += 1
            if self.stopped or self.done:
                self.stats["dropped"] += 1
                return
            self.queue.append((kind, body["event_id"], raw))
            self.queue_bytes += len(raw)
            self._trim_memory()
            self.cond.notify_all()

    def _trim_memory(self):
        """Called with the lock held: bound memory by dropping the oldest heartbeats."""
        while self.queue_bytes > MEMORY_QUEUE_MAX_BYTES:
            for i, item in enumerate(self.queue):
                if item[0] == "heartbeat":
                    del self.queue[i]
                    self.queue_bytes -= len(item[2])
                    self.stats["dropped"] += 1
                    say_once("memory-full", "event queue full; dropping the oldest heartbeats")
                    break
            else:
                return

    def finish(self, timeout, spool_first=False):
        """Stop taking events and deliver for at most `timeout` seconds; what is
        left stays in the spool. Returns the stats."""
        with self.cond:
            self.closing = True
            self.spool_first = spool_first
            self.deadline = time.monotonic() + timeout
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout + self.http_timeout + 5)
            if self.thread.is_alive():
                say("the delivery thread did not stop in time; leaving it behind")
        return dict(self.stats)

    def cut_short(self):
        """Give up waiting for delivery (a second signal during the drain)."""
        with self.cond:
            self.deadline = time.monotonic()
            self.cond.notify_all()

    def summary(self):
        s = self.stats
        return (
            "done: produced=%d sent=%d accepted=%d duplicate=%d rejected=%d dropped=%d "
            "recovered=%d spooled=%d"
            % (
                s["produced"],
                s["accepted"] + s["duplicate"],
                s["accepted"],
                s["duplicate"],
                s["rejected"],
                s["dropped"],
                s["recovered"],
                s["spooled"],
            )
        )

    # -- the delivery thread --

    def _run(self):
        unexpected = 0
        try:
            if self.spool is not None:
                try:
                    self.stats["recovered"] = self.spool.adopt_orphans()
                    if self.stats["recovered"]:
                        say("sending %d events spooled by earlier runs" % self.stats["recovered"])
                except (OSError, ValueError) as exc:
                    self._spool_failed(exc)
            while True:
                try:
                    if not self._step():
                        break
                    unexpected = 0
                except Exception as exc:  # keep delivering whatever went wrong once
                    unexpected += 1
                    say("delivery error (%s: %s)" % (type(exc).__name__, exc))
                    if unexpected >= 5:
                        say("too many delivery errors; giving up delivery for this run")
                        break
                    with self.cond:
                        self._backoff(None)
        finally:
            self._wind_up()

    def _spool_usable(self):
        return not self.spool_broken

    def _spool_pending(self):
        return not self.spool_broken and self.spool.pending > 0

    def _step(self):
        """One round of work. False when the thread is done."""
        with self.cond:
            while True:
                if self.stopped:
                    return False
                now = time.monotonic()
                if self.closing and now >= self.deadline:
                    return False
                ready = now >= self.retry_at
                spooled = self._spool_pending()
                if self.queue and (ready or self._spool_usable()):
                    break
                if spooled and ready:
                    break
                if not self.queue and not spooled:
                    if self.closing:
                        return False
                    self.cond.wait()
                    continue
                until = self.retry_at
                if self.closing:
                    until = min(until, self.deadline)
                self.cond.wait(max(0.01, until - now))
            fresh, self.queue, self.queue_bytes = self.queue, [], 0
            backing_off = time.monotonic() < self.retry_at
            spool_first = self.spool_first
        if fresh:
            if self._spool_usable() and (self._spool_pending() or backing_off or spool_first):
                self._park(fresh)  # keep the order: behind what is spooled already
            else:
                rest = self._send_items(fresh)
                if rest:
                    self._park(rest)
            return True
        items, end, lines = self.spool.read_batch(BULK_MAX_EVENTS, BULK_MAX_BYTES)
        if not items or not self._send_items(items):
            self.spool.ack(end, lines)
        return True

    def _park(self, items):
        """Put undelivered events in the spool, or back in memory without one."""
        if self._spool_usable():
            over = self.spool.size > SPOOL_MAX_BYTES
            keep = [i for i in items if not (over and i[0] == "heartbeat")]
            if len(keep) < len(items):
                self.stats["dropped"] += len(items) - len(keep)
                say_once(
                    "spool-full", "spool over %d MiB; dropping heartbeats" % (SPOOL_MAX_BYTES >> 20)
                )
            try:
                self.spool.append([i[2] for i in keep])
                return
            except OSError as exc:
                self._spool_failed(exc)
        with self.cond:
            self.queue = list(items) + self.queue
            self.queue_bytes = sum(len(i[2]) for i in self.queue)
            self._trim_memory()

    def _spool_failed(self, exc):
        self.spool_broken = True
        say(
            "cannot use the spool in %s (%s); undelivered events stay in memory only"
            % (self.spool.directory if self.spool else "?", exc)
        )

    def _wind_up(self):
        with self.cond:
            left, self.queue, self.queue_bytes = self.queue, [], 0
        if left and not self.stopped and self._spool_usable():
            try:
                self.spool.append([i[2] for i in left])
                left = []
            except OSError as exc:
                self._spool_failed(exc)
        if left:
            self.stats["dropped"] += len(left)
        if self.spool is not None and self.spool.fd is not None:
            try:
                self.stats["spooled"] = self.spool.close()
                if self.stats["spooled"]:
                    say(
                        "%d events left in the spool %s; `%s --flush` sends them"
                        % (self.stats["spooled"], self.spool.path, PROG)
                    )
            except OSError as exc:
                say("could not tidy the spool %s: %s" % (self.spool.path, exc))
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def _batches(self, items):
        start, size = 0, 0
        for i, item in enumerate(items):
            if i > start and (i - start >= BULK_MAX_EVENTS or size + len(item[2]) > BULK_MAX_BYTES):
                yield start, items[start:i]
                start, size = i, 0
            size += len(item[2]) + 1
        if start < len(items):
            yield start, items[start:]

    def _send_items(self, items):
        """Send in bulk batches. Returns the events still to deliver (on a retryable failure)."""
        for start, batch in self._batches(items):
            outcome = self._post(batch)
            if outcome == RETRY:
                return items[start:]
            if outcome == STOP:
                return []
        return []

    def _post(self, batch):
        if len(batch) == 1:
            kind, _event_id, raw = batch[0]
            status, body, headers = self._request(kind + "/", raw)
        else:
            raw = b'{"events":[' + b",".join(item[2] for item in batch) + b"]}"
            status, body, headers = self._request("bulk/", raw)
        if status is None or status in (408, 429) or status >= 500:
            self._failed(status, body, headers)
            return RETRY
        self._recovered()
        if status in (401, 403) or 300 <= status < 400:
            where = headers.get("Location") if headers is not None else None
            reason = "redirected to %s; set --url to it" % where if where else _server_message(body)
            self._stop(batch, "the server refused delivery (%d: %s)" % (status, reason))
            return STOP
        if len(batch) == 1:
            if 200 <= status < 300:
                self._count("duplicate" if status == 200 else "accepted")
            else:
                self._reject(batch[0], status, _server_message(body))
            return SENT
        if status in (400, 413):
            # The envelope itself was refused (too big, too many): go one by one.
            for item in batch:
                if self._post([item]) != SENT:
                    return RETRY if not self.stopped else STOP
            return SENT
        if status != 200:
            for item in batch:
                self._reject(item, status, _server_message(body))
            return SENT
        return self._bulk_results(batch, body, headers)

    def _bulk_results(self, batch, body, headers):
        try:
            results = json.loads(body.decode("utf-8"))["results"]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._failed(200, b"an unreadable bulk answer", headers)
            return RETRY
        for i, item in enumerate(batch):
            result = results[i] if i < len(results) and isinstance(results[i], dict) else {}
            status = result.get("status")
            if status in ("accepted", "duplicate"):
                self._count(status)
            else:
                message = result.get("message") or "no result for this event"
                self._reject(item, 400, message)
        return SENT

    def _count(self, key):
        with self.cond:
            self.stats[key] += 1

    def _reject(self, item, status, message):
        with self.cond:
            self.stats["rejected"] += 1
            self.rejections += 1
            n = self.rejections
        if n <= MAX_REJECTION_MESSAGES:
            say("server rejected %s event %s (%s): %s" % (item[0], item[1], status, message))
        elif n == MAX_REJECTION_MESSAGES + 1:
            say("more events rejected; not listing them")

    def _stop(self, batch, reason):
        with self.cond:
            self.stopped = reason
            dropped = len(batch) + len(self.queue)
            self.queue, self.queue_bytes = [], 0
            self.stats["dropped"] += dropped
            self.cond.notify_all()
        say("%s; delivery stopped for this run, the payload carries on" % reason)

    def _failed(self, status, body, headers):
        with self.cond:
            self._backoff(_retry_after_seconds(headers) if status in (429, 503) else None)
            first = self.outage_since is None
            if first:
                self.outage_since = time.monotonic()
        if first:
            what = body if status is None else "%s %s" % (status, _server_message(body))
            where = "spooling to %s" % self.spool.directory if self._spool_usable() else "queueing"
            say("server not reachable (%s); %s and retrying" % (what, where))

    def _recovered(self):
        with self.cond:
            since, self.outage_since = self.outage_since, None
            self.failures = 0
            self.retry_at = 0.0
        if since is not None:
            say("server reachable again after %.1f s" % (time.monotonic() - since))

    def _backoff(self, retry_after):
        """Called with the lock held."""
        self.failures += 1
        if retry_after is not None:
            delay = min(retry_after, RETRY_AFTER_MAX_S) * random.uniform(1.0, 1.1)
        else:
            ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(self.failures - 1, 16))
            delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        self.retry_at = time.monotonic() + delay

    def _request(self, path, raw):
        """(status, body, headers); status None when no HTTP answer came back."""
        headers = {
            "Content-Type": "application/json",
            "Authorization": "Bearer " + self.token,
            "User-Agent": "%s/%s" % (PROG, VERSION),
        }
        data = raw
        if len(raw) >= GZIP_MIN_BYTES:
            data = gzip.compress(raw, 6)
            headers["Content-Encoding"] = "gzip"
        timeout = self.http_timeout
        with self.cond:
            if self.closing:
                timeout = min(timeout, max(1.0, self.deadline - time.monotonic()))
        request = urllib.request.Request(self.endpoint + path, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.read(RESPONSE_MAX_BYTES), response.headers
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read(RESPONSE_MAX_BYTES)
            except (OSError, http.client.HTTPException):
                body = b""
            return exc.code, body, exc.headers
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            reason = getattr(exc, "reason", None) or exc
            return None, "%s: %s" % (type(exc).__name__, reason), None


# --- what the reporter observes --------------------------------------------------


class LogTail(object):
    """The payload's combined output: counts the bytes and keeps the ones not
    yet sent, at most `limit` of them (the newest)."""

    def __init__(self, limit):
        self.lock = threading.Lock()
        self.limit = limit
        self.buffer = bytearray()
        self.buffer_offset = 0
        self.total = 0
        self.events = None
        self._carry = b""

    def feed(self, chunk):
        with self.lock:
            self.buffer += chunk
            self.total += len(chunk)
            excess = len(self.buffer) - self.limit
            if excess > 0:
                del self.buffer[:excess]
                self.buffer_offset += excess
        self._count_events(chunk)

    def _count_events(self, chunk):
        # Record numbers only grow, so the last mention in a chunk is enough;
        # one cut in half is completed by the carry on the next chunk.
        text = self._carry + chunk
        match = EVENTS_RE.match(text, max(0, text.rfind(EVENTS_PREFIX)))
        if match:
            number = int(match.group(1))
            if self.events is None or number > self.events:
                self.events = number
        self._carry = text[text.rfind(b"\n") + 1 :][-200:]

    def take(self):
        """(offset, bytes) of everything not yet taken; the offset is in the whole stream."""
        with self.lock:
            offset, data = self.buffer_offset, bytes(self.buffer)
            self.buffer = bytearray()
            self.buffer_offset = self.total
        return offset, data


def log_field(offset, data):
    """The `log` member of an event: text when it is clean UTF-8, else base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        # Heavily escaped text (control characters, non-Latin scripts) is
        # smaller as base64.
        if len(json.dumps(text)) <= 4 * ((len(data) + 2) // 3) + 2:
            return {"offset": offset, "data": text}
    return {"offset": offset, "data_b64": base64.b64encode(data).decode("ascii")}


class ProcessSampler(object):
    """CPU time and memory of the payload and all its descendants, from /proc.

    CPU counts utime+stime of every live process in the tree plus
    cutime+cstime, which holds the time of descendants already reaped."""

    def __init__(self, root_pid):
        self.root = root_pid
        self.ticks = float(os.sysconf("SC_CLK_TCK"))
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.cpu_s = 0.0
        self.peak_rss = 0
        self.available = os.path.isdir("/proc/self")

    def sample(self):
        if not self.available:
            return
        table = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name, "rb") as handle:
                    raw = handle.read()
            except OSError:
                continue  # it ended while we looked
            fields = raw[raw.rfind(b")") + 2 :].split()
            if len(fields) < 22:
                continue
            cpu = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            table[int(name)] = (int(fields[1]), cpu, int(fields[21]))
        children = {}
        for pid, row in table.items():
            children.setdefault(row[0], []).append(pid)
        cpu_ticks, rss_pages, todo, seen = 0, 0, [self.root], set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            cpu_ticks += table[pid][1]
            rss_pages += table[pid][2]
            todo.extend(children.get(pid, ()))
        self.cpu_s = max(self.cpu_s, cpu_ticks / self.ticks)
        self.peak_rss = max(self.peak_rss, rss_pages * self.page, self._root_hwm())

    def _root_hwm(self):
        try:
            with open("/proc/%d/status" % self.root) as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass  # the payload ended or the kernel hides it
        return 0

    def include_reaped(self):
        """After the payload was waited for: the kernel's totals of reaped children."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = max(self.cpu_s, usage.ru_utime + usage.ru_stime)
        # Linux reports ru_maxrss in KiB.
        self.peak_rss = max(self.peak_rss, usage.ru_maxrss * 1024)


def disk_usage(top, max_entries=DISK_WALK_MAX_ENTRIES):
    """Bytes in files under `top`, looking at no more than `max_entries` files."""
    total, seen = 0, 0
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            seen += 1
            if seen > max_entries:
                return total
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # removed while we walked
    return total


def adler32_of(path):
    value = 1
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            if not block:
                break
            value = zlib.adler32(block, value)
    return "adler32:%08x" % (value & 0xFFFFFFFF)


def collect_outputs(workdir, patterns):
    """[{name, size, checksum}] for the files the globs match, relative names."""
    outputs, seen = [], set()
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(workdir, pattern), recursive=True)):
            if not os.path.isfile(path):
                continue
            name = os.path.relpath(path, workdir)
            if name.startswith(".."):
                name = os.path.abspath(path)
            if name in seen or len(outputs) >= MAX_OUTPUTS:
                continue
            seen.add(name)
            try:
                entry = {"name": name[:1024], "size": os.path.getsize(path)}
            except OSError as exc:
                say("output %s: %s" % (name, exc))
                continue
            try:
                entry["checksum"] = adler32_of(path)
            except OSError as exc:
                say("output %s: no checksum (%s)" % (name, exc))
            outputs.append(entry)
    return outputs


def _read_first(path, prefix, separator):
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(prefix):
                    return line.split(separator, 1)[1].strip().strip('"')
    except (OSError, IndexError):
        pass  # not on this node
    return None


def node_properties(cvmfs_repos):
    """A flat map of scalars describing the worker node."""
    props = {
        "os": _read_first("/etc/os-release", "PRETTY_NAME=", "="),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": _read_first("/proc/cpuinfo", "model name", ":"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "reporter": VERSION,
        "cvmfs": os.path.isdir("/cvmfs"),
    }
    mem = _read_first("/proc/meminfo", "MemTotal:", ":")
    if mem and mem.split()[0].isdigit():
        props["mem_bytes"] = int(mem.split()[0]) * 1024
    if props["cvmfs"]:
        try:
            props["cvmfs_mounted"] = ",".join(sorted(os.listdir("/cvmfs")))
        except OSError:
            pass  # autofs may refuse to list; the probes below still work
    for repo in cvmfs_repos[:32]:
        props[("cvmfs:" + repo)[:64]] = os.path.isdir(os.path.join("/cvmfs", repo))
    for name in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        if os.environ.get(name):
            props["container"] = os.environ[name]
    return {
        k: (v[:MAX_NODE_STRING] if isinstance(v, str) else v)
        for k, v in props.items()
        if v is not None
    }


# --- running the payload ---------------------------------------------------------


def exit_status(returncode):
    """The shell's convention: a payload killed by signal N gives 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class SignalForwarder(object):
    """Passes termination and user signals on to the payload."""

    def __init__(self):
        self.proc = None
        self.received = []
        self.on_late_signal = None

    def install(self):
        for name in FORWARDED_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                try:
                    signal.signal(signum, self._handle)
                except (OSError, ValueError):
                    pass  # not in the main thread, or not catchable here

    def attach(self, proc):
        self.proc = proc
        for signum in self.received:
            self._forward(signum)

    def _handle(self, signum, frame):
        self.received.append(signum)
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self._forward(signum)
        elif proc is not None and self.on_late_signal is not None:
            self.on_late_signal()

    def _forward(self, signum):
        try:
            os.kill(self.proc.pid, signum)
        except OSError:
            pass  # it has just ended

    @property
    def terminated(self):
        return any(s in (signal.SIGTERM, signal.SIGINT) for s in self.received)


def spawn(command, cwd, **kwargs):
    """Start the payload; (proc, None) or (None, (exit status, message))."""
    try:
        return subprocess.Popen(command, cwd=cwd, **kwargs), None
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        return None, (code, "cannot start %s: %s" % (command[0], exc))


def run_unmonitored(command, workdir):
    forwarder = SignalForwarder()
    forwarder.install()
    proc, failure = spawn(command, workdir)
    if failure:
        say(failure[1])
        return failure[0]
    forwarder.attach(proc)
    return exit_status(proc.wait())


class MonitoredRun(object):
    def __init__(self, cfg, command):
        self.cfg = cfg
        self.command = command
        self.guard = Guard()
        self.forwarder = SignalForwarder()
        self.sender = None
        self.log = LogTail(cfg.tail_bytes)
        self.sampler = None
        self.proc = None
        self.echo = True
        self.started_mono = None

    def run(self):
        cfg = self.cfg
        self.forwarder.install()
        self.sender = self.guard("delivery", self._make_sender)
        started_at = utc_now_iso()
        self.started_mono = time.monotonic()
        self.proc, failure = spawn(
            self.command, cfg.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        pump = None
        if self.proc is not None:
            self.forwarder.attach(self.proc)
            pump = threading.Thread(target=self._pump, name="prodmon-pump")
            pump.daemon = True
            pump.start()
        try:
            return self._monitor(started_at, failure, pump)
        except Exception as exc:  # the last line of defence: the payload's status still wins
            say("monitoring failed (%s: %s); waiting for the payload" % (type(exc).__name__, exc))
            if self.proc is None:
                return failure[0]
            return exit_status(self.proc.wait())

    def _monitor(self, started_at, failure, pump):
        cfg = self.cfg
        say(
            "attempt %s of %s/%s/%s -> %s"
            % (cfg.attempt, cfg.campaign, cfg.stage, cfg.job, cfg.url)
        )
        self.guard("start event", self._send_start, started_at)
        if failure:
            say(failure[1])
            self.log.feed((PROG + ": " + failure[1] + "\n").encode("utf-8", "replace"))
            self.guard("end event", self._send_end, failure[0], None)
            self._finish()
            return failure[0]

        self.sampler = self.guard("process metrics", ProcessSampler, self.proc.pid)
        returncode = self._watch()
        pump.join(5)
        if pump.is_alive():
            say_once("pump", "the payload's descendants keep its output open; not waiting")
        if self.sampler is not None:
            self.guard("final process metrics", self.sampler.include_reaped)
        if returncode < 0:
            self.guard("end event", self._send_end, None, -returncode)
        else:
            self.guard("end event", self._send_end, returncode, None)
        self._finish()
        return exit_status(returncode)

    def _make_sender(self):
        spool = None
        try:
            spool = Spool(self.cfg.spool_dir, self.cfg.token)
        except (OSError, ValueError) as exc:
            say("no spool (%s); undelivered events stay in memory only" % exc)
        sender = Sender(
            self.cfg.url, self.cfg.token, spool, self.cfg.http_timeout, self.cfg.ca_file
        )
        sender.start()
        return sender

    def _watch(self):
        """Wait for the payload, sending heartbeats. Returns its returncode."""
        interval = self.cfg.interval
        sample_every = min(interval, SAMPLE_EVERY_MAX_S)
        next_heartbeat = time.monotonic() + interval
        next_sample = time.monotonic() + min(1.0, sample_every)
        while True:
            now = time.monotonic()
            try:
                return self.proc.wait(timeout=max(0.01, min(next_heartbeat, next_sample) - now))
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= next_sample and self.sampler is not None:
                self.guard("process metrics", self.sampler.sample)
                next_sample = now + sample_every
            if now >= next_heartbeat:
                self.guard("heartbeat", self._send_heartbeat)
                next_heartbeat = max(next_heartbeat + interval, now + interval / 2)

    def _pump(self):
        """Copy the payload's output through and keep it for the server.

        This loop must outlive every failure: if it stopped reading, the pipe
        would fill and the payload would block."""
        fd = self.proc.stdout.fileno()
        buffering = True
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                say("reading the payload's output failed: %s" % exc)
                return
            if not chunk:
                return
            if self.echo:
                try:
                    write_all(1, chunk)
                except OSError as exc:
                    self.echo = False
                    say("cannot copy the payload's output to stdout (%s); still sending it" % exc)
            if buffering:
                try:
                    self.log.feed(chunk)
                except Exception as exc:  # the copy-through above must go on regardless
                    buffering = False
                    say("log buffering failed (%s); the log will not be sent" % exc)

    def _identity(self):
        cfg = self.cfg
        return {
            "event_id": uuid.uuid4().hex,
            "campaign": cfg.campaign,
            "stage": cfg.stage,
            "job": cfg.job,
            "attempt": cfg.attempt,
            "time": utc_now_iso(),
        }

    def _submit(self, kind, event):
        if self.sender is not None:
            self.sender.submit(kind, event)

    def _send_start(self, started_at):
        cfg = self.cfg
        event = self._identity()
        event["time"] = started_at
        event["host"] = (cfg.host or socket.getfqdn() or "unknown")[:255]
        if cfg.site:
            event["site"] = cfg.site[:128]
        if cfg.batch_id:
            event["batch_id"] = cfg.batch_id[:128]
        if cfg.cores:
            event["cores"] = cfg.cores
        node = self.guard("node properties", node_properties, cfg.cvmfs_repos)
        if node:
            event["node"] = node
        self._submit("start", event)

    def _metrics(self):
        metrics = {"wall_s": round(time.monotonic() - self.started_mono, 3)}
        if self.sampler is not None and (self.sampler.available or self.sampler.cpu_s):
            metrics["cpu_s"] = round(self.sampler.cpu_s, 3)
            if self.sampler.peak_rss:
                metrics["peak_rss_bytes"] = self.sampler.peak_rss
        disk = self.guard("disk usage", disk_usage, self.cfg.workdir)
        if disk is not None:
            metrics["disk_bytes"] = disk
        if self.log.events is not None:
            metrics["events_processed"] = self.log.events
        return metrics

    def _add_log(self, event):
        offset, data = self.log.take()
        if data:
            event["log"] = log_field(offset, data)

    def _send_heartbeat(self):
        event = self._identity()
        event["metrics"] = self._metrics()
        self._add_log(event)
        self._submit("heartbeat", event)

    def _send_end(self, exit_code, signum):
        event = self._identity()
        event["exit_code"] = exit_code
        if signum is not None:
            event["signal"] = signum
        event["metrics"] = self.guard("metrics", self._metrics) or {}
        outputs = self.guard("outputs", collect_outputs, self.cfg.workdir, self.cfg.outputs)
        if outputs:
            event["outputs"] = outputs
        self._add_log(event)
        self._submit("end", event)

    def _finish(self):
        if self.sender is None:
            return
        timeout = self.cfg.drain_timeout
        terminated = self.forwarder.terminated
        if terminated:
            timeout = min(timeout, DRAIN_AFTER_SIGNAL_S)
        self.forwarder.on_late_signal = self.sender.cut_short
        self.guard("delivery", self.sender.finish, timeout, terminated)
        say(self.sender.summary())


def flush(cfg):
    problems = [m for m in cfg.missing if "url" in m.lower() or "token" in m.lower()]
    if problems:
        say("--flush needs " + " and ".join(problems))
        return EXIT_USAGE
    sender = Sender(
        cfg.url, cfg.token, Spool(cfg.spool_dir, cfg.token), cfg.http_timeout, cfg.ca_file
    )
    sender.start()
    sender.finish(cfg.drain_timeout)
    say(sender.summary())
    return 0 if sender.stats["spooled"] == 0 else EXIT_TEMPFAIL


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, command = split_argv(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(own)
    except UsageError as exc:
        if not command:
            parser.print_usage(sys.stderr)
            say(str(exc))
            return EXIT_USAGE
        say("%s; running the payload without monitoring" % exc)
        return run_unmonitored(command, os.getcwd())
    cfg = Config(resolve_values(args, os.environ), os.environ)
    for warning in cfg.warnings:
        say(warning)
    if args.flush:
        return flush(cfg)
    if not command:
        parser.print_usage(sys.stderr)
        say("no payload: put its command after --")
        return EXIT_USAGE
    if cfg.missing:
        say("monitoring off, missing %s; running the payload unmonitored" % ", ".join(cfg.missing))
        return run_unmonitored(command, cfg.workdir)
    return MonitoredRun(cfg, command).run()


if __name__ == "__main__":
    sys.exit(main())
