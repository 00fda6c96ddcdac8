"""The local backend (the default): runs attempts as processes on this machine.

Each attempt is started through local_runner.py, which detaches at once (the
caller gets the batch id "local:<host>:<pid>" and never waits for the job),
waits for one of PRODMON_LOCAL_MAX_JOBS slots, then runs the reporter wrapping
the payload. Cancel signals the runner's process group. The runner enforces
the attempt's memory and wall-time requests: a payload over its memory is
killed with SIGKILL, one over its wall time gets SIGTERM (then SIGKILL), and
the status says so ("OUT_OF_MEMORY", "TIMEOUT", as Slurm would).
"""

import json
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from prodmon.submission.base import (
    BatchRef,
    BatchState,
    BatchStatus,
    JobSpec,
    SubmissionError,
    SubmitResult,
    base_environment,
    reporter_argv,
    shell_join,
)
from prodmon.submission.config import setting, submission_dir

RUNNER = Path(__file__).with_name("local_runner.py")
START_TIMEOUT_S = 30
# exit.json's "limit" -> the raw state, named as Slurm names it.
LIMIT_STATES = {"memory": "OUT_OF_MEMORY", "walltime": "TIMEOUT"}


def _signal_of(code) -> int | None:
    """The reporter exits 128+N when its payload died from signal N."""
    return code - 128 if isinstance(code, int) and 128 < code < 160 else None


def _parse(batch_id: str) -> tuple[str, int] | None:
    parts = batch_id.split(":")
    if len(parts) != 3 or parts[0] != "local" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _is_ours(pid: int, workdir: Path) -> bool:
    """The pid still runs this attempt's runner (not a recycled pid): its command
    line names the runner and the attempt's own working directory."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return (
        len(argv) > 1 and argv[1].endswith(RUNNER.name.encode()) and str(workdir).encode() in argv
    )


class LocalBackend:
    name = "local"

    def __init__(self):
        self.host = socket.gethostname()

    def submit(self, spec: JobSpec) -> SubmitResult:
        excluded = {h.split(".")[0] for h in spec.exclude_nodes}
        if self.host.split(".")[0] in excluded or socket.getfqdn() in spec.exclude_nodes:
            raise SubmissionError(f"this host ({self.host}) is on the node exclusion list")
        spec.workdir.mkdir(parents=True, exist_ok=True)
        python = str(setting("PRODMON_SUBMISSION_PYTHON"))
        argv = [
            python,
            str(RUNNER),
            "--slots-dir",
            str(submission_dir() / "local-slots"),
            "--slots",
            str(int(setting("PRODMON_LOCAL_MAX_JOBS"))),
            "--workdir",
            str(spec.workdir),
            *(["--memory-mb", str(int(spec.memory_mb))] if spec.memory_mb else []),
            *(["--walltime-s", str(int(spec.walltime_s))] if spec.walltime_s else []),
            "--",
            *reporter_argv(
                python=python,
                reporter=str(setting("PRODMON_SUBMISSION_REPORTER")),
                command=spec.command,
            ),
        ]
        command = shell_join(argv)
        try:
            proc = subprocess.run(
                argv,
                env=base_environment(spec.environment),
                cwd=spec.workdir,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SubmissionError(
                f"could not start the local runner: {exc}", command=command
            ) from exc
        output = (proc.stdout + proc.stderr).strip()
        batch_id = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or _parse(batch_id) is None:
            raise SubmissionError(
                f"the local runner failed (exit {proc.returncode})", command=command, output=output
            )
        return SubmitResult(batch_id=batch_id, command=command, output=output)

    def batch_id_in(self, workdir: Path) -> str:
        """The batch id of the runner started for this attempt directory, or ""
        when none was: the runner writes it before it answers, so a caller that
        died mid-submit learns whether the job was started (and must not be
        started again) or not (and can be submitted now)."""
        try:
            batch_id = (workdir / "batch_id").read_text().strip()
        except OSError:
            return ""
        return batch_id if _parse(batch_id) else ""

    def _signal(self, ref: BatchRef, signum: int) -> str:
        parsed = _parse(ref.batch_id)
        if parsed is None or parsed[0] != self.host:
            return f"{ref.batch_id} is not a job of this host ({self.host})"
        pid = parsed[1]
        if not _is_ours(pid, ref.workdir):
            return f"{ref.batch_id} is not running"
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return f"{ref.batch_id} is not running"
        return f"sent {signal.Signals(signum).name} to process group {pid}"

    def cancel(self, ref: BatchRef) -> str:
        return self._signal(ref, signal.SIGTERM)

    def hold(self, ref: BatchRef) -> str:
        return "the local backend cannot hold a job"

    def release(self, ref: BatchRef) -> str:
        return "the local backend cannot hold a job"

    def status(self, refs: Sequence[BatchRef]) -> dict[str, BatchStatus]:
        out = {}
        for ref in refs:
            parsed = _parse(ref.batch_id)
            if parsed is None or parsed[0] != self.host:
                continue
            exit_file = ref.workdir / "exit.json"
            if exit_file.exists():
                try:
                    data = json.loads(exit_file.read_text())
                except (OSError, ValueError):
                    data = {}
                code, sig = data.get("exit_code"), data.get("signal")
                limit = data.get("limit")
                if limit in LIMIT_STATES:
                    out[ref.batch_id] = BatchStatus(
                        ref.batch_id,
                        BatchState.FAILED,
                        raw_state=LIMIT_STATES[limit],
                        exit_code=code,
                        signal=sig if sig is not None else _signal_of(code),
                        reason=str(data.get("reason", "")),
                    )
                    continue
                if sig is not None:
                    state, raw = BatchState.CANCELLED, f"signal {sig}"
                elif code == 0:
                    state, raw = BatchState.SUCCEEDED, "exit 0"
                else:
                    state, raw = BatchState.FAILED, f"exit {code}"
                out[ref.batch_id] = BatchStatus(
                    ref.batch_id, state, raw_state=raw, exit_code=code, signal=sig
                )
            elif _is_ours(parsed[1], ref.workdir):
                started = (ref.workdir / "started").exists()
                out[ref.batch_id] = BatchStatus(
                    ref.batch_id,
                    BatchState.RUNNING if started else BatchState.QUEUED,
                    raw_state="running" if started else "waiting for a slot",
                )
            else:
                out[ref.batch_id] = BatchStatus(
                    ref.batch_id,
                    BatchState.UNKNOWN,
                    raw_state="vanished",
                    reason="the runner is gone and left no exit status",
                )
        return out

    def events(self, ref: BatchRef) -> list:
        return []
