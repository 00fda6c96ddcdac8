#!/usr/bin/env python3
"""The local backend's supervisor: runs one attempt detached from the web server.

    python local_runner.py --slots-dir DIR --slots N --workdir DIR
                           [--memory-mb MB] [--walltime-s S] -- CMD ...

It forks; the parent prints the batch id ("local:<host>:<pid>") and exits at
once, so the caller (a web request or a task) never waits for the job. The
child starts a new session (its pid is the process group the backend signals),
sends its output to <workdir>/job.log, waits for one of N slot locks (flock on
DIR/slot-<i>.lock: the concurrency limit, enforced by the kernel and released
when the process ends, however it ends), writes <workdir>/started, runs CMD
(the reporter wrapping the payload) and writes <workdir>/exit.json with its
exit status. Standard library only: it must not import Django.

Limits, as a batch system would enforce them:
- memory: every WATCH_S the runner sums the resident memory (VmRSS) of the
  payload's processes (its session, less the runner and the reporter); over
  --memory-mb it kills them with SIGKILL. The reporter sees its payload killed
  by signal 9 and reports it; exit.json says "limit": "memory".
- wall time: after --walltime-s it sends SIGTERM to every process of the job
  (the reporter reports the payload's signal 15), then SIGKILL KILL_GRACE_S
  later; exit.json says "limit": "walltime".
When the reporter has exited, processes the payload left in the background
are killed, as a batch system ends a job's whole process tree.
"""

# ruff: noqa: E402 - sys.path is repaired before the other imports.
import os
import sys

# Run as a script, this file's directory comes first on sys.path and the
# package's modules (htcondor.py, local.py) would shadow real ones.
if __name__ == "__main__" and sys.path:
    if os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]

import argparse
import fcntl
import json
import signal
import socket
import subprocess
import time
import traceback

SLOT_POLL_S = 0.5
WATCH_S = 0.25
KILL_GRACE_S = 10
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _acquire_slot(slots_dir: str, slots: int, stop: list) -> tuple[int, int] | None:
    os.makedirs(slots_dir, exist_ok=True)
    while not stop:
        for i in range(slots):
            fd = os.open(os.path.join(slots_dir, f"slot-{i}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd, i  # held until this process ends; not inherited by the job
        time.sleep(SLOT_POLL_S)
    return None


def _session_pids(sid: int) -> list[int]:
    """Processes of this session (the runner's own pid is the session id)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name "(...)": state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _payload_pids(reporter_pid: int) -> list[int]:
    me = os.getpid()
    return [p for p in _session_pids(me) if p not in (me, reporter_pid)]


def _kill(pids, signum) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _supervise(proc, *, memory_mb: int, walltime_s: float) -> dict:
    """Wait for the reporter, enforcing the limits. Returns what was enforced:
    {} or {"limit": ..., "reason": ..., "peak_rss_mb": ...}."""
    started = time.monotonic()
    limit_kb = memory_mb * 1024 if memory_mb else 0
    peak_kb = 0
    enforced: dict = {}
    term_at = None
    while True:
        try:
            proc.wait(timeout=WATCH_S)
            break
        except subprocess.TimeoutExpired:
            pass
        payload = _payload_pids(proc.pid)
        rss = sum(_rss_kb(p) for p in payload)
        peak_kb = max(peak_kb, rss)
        if limit_kb and rss > limit_kb and not enforced:
            enforced = {
                "limit": "memory",
                "reason": (
                    f"memory limit exceeded: the payload used {rss // 1024} MB"
                    f" of the {memory_mb} MB requested; killed"
                ),
            }
            print(f"local-runner: {enforced['reason']}", flush=True)
            _kill(payload, signal.SIGKILL)
        elapsed = time.monotonic() - started
        if walltime_s and elapsed > walltime_s and term_at is None:
            if not enforced:
                enforced = {
                    "limit": "walltime",
                    "reason": f"wall time limit exceeded: {walltime_s:g} s requested; killed",
                }
                print(f"local-runner: {enforced['reason']}", flush=True)
            term_at = time.monotonic()
            # As a batch system does: every process of the job. The reporter
            # reports how its payload ended.
            _kill(_payload_pids(-1), signal.SIGTERM)
        if term_at is not None and time.monotonic() - term_at > KILL_GRACE_S:
            _kill(_payload_pids(-1), signal.SIGKILL)  # everything but this runner
            term_at = float("inf")
    # Whatever the payload left running in the background ends with the job.
    _kill(_payload_pids(-1), signal.SIGKILL)
    if enforced:
        enforced["peak_rss_mb"] = peak_kb // 1024
    return enforced


def _child(args, batch_id: str) -> int:
    log = os.open(os.path.join(args.workdir, "job.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["PRODMON_BATCH_ID"] = batch_id
    exit_file = os.path.join(args.workdir, "exit.json")

    stop: list = []
    child: list = []

    def on_signal(signum, _frame):
        stop.append(signum)
        if child:
            # The reporter forwards it to the payload; it is in our process group
            # too, so a group signal reaches it directly as well.
            try:
                child[0].send_signal(signum)
            except ProcessLookupError:
                pass

    for sig in FORWARDED:
        signal.signal(sig, on_signal)

    slot = _acquire_slot(args.slots_dir, args.slots, stop)
    if slot is None:
        _write_json(exit_file, {"exit_code": None, "signal": stop[0], "started": False})
        return 128 + stop[0]
    _write_json(os.path.join(args.workdir, "started"), {"at": time.time(), "slot": slot[1]})
    try:
        proc = subprocess.Popen(args.command, cwd=args.workdir)
    except OSError as exc:
        print(f"local-runner: cannot start {args.command[0]}: {exc}", flush=True)
        _write_json(exit_file, {"exit_code": 127, "signal": None, "started": True})
        return 127
    child.append(proc)
    enforced = _supervise(proc, memory_mb=args.memory_mb, walltime_s=args.walltime_s)
    rc = proc.returncode
    _write_json(
        exit_file,
        {
            "exit_code": rc if rc >= 0 else None,
            "signal": -rc if rc < 0 else None,
            "started": True,
            **enforced,
        },
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prodmon-local-runner")
    parser.add_argument("--slots-dir", required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--memory-mb", type=int, default=0, help="0: no memory limit")
    parser.add_argument("--walltime-s", type=float, default=0, help="0: no wall-time limit")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command or args.slots < 1:
        parser.error("a command after -- and --slots >= 1 are required")
    os.makedirs(args.workdir, exist_ok=True)

    host = socket.gethostname()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        # Wait until the child has its own session, so a cancel right away works.
        os.read(read_end, 1)
        print(f"local:{host}:{pid}", flush=True)
        return 0
    os.close(read_end)
    code = 1
    try:
        os.setsid()
        batch_id = f"local:{host}:{os.getpid()}"
        # Written before the caller hears the id: a caller that dies before it
        # records the id finds it here (LocalBackend.batch_id_in).
        tmp = os.path.join(args.workdir, "batch_id.tmp")
        with open(tmp, "w") as fh:
            fh.write(batch_id + "\n")
        os.replace(tmp, os.path.join(args.workdir, "batch_id"))
        os.write(write_end, b"1")
        os.close(write_end)
        code = _child(args, batch_id)
    except BaseException:  # noqa: BLE001 - say why in job.log, then leave the fork
        traceback.print_exc()
    finally:
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
