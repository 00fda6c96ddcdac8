"""The Slurm backend: sbatch, squeue, scontrol and scancel.

Each attempt gets a small batch script in its working directory (which must be
on a file system the worker nodes see) that execs the reporter wrapping the
payload. The job's environment is carried by `--export=NAME,NAME,...`: sbatch
runs with exactly the job's environment (PRODMON_* identity, the stage's
configured variables, PATH and HOME), and naming the variables exports their
values, commas and spaces included, and nothing of the web server's own
environment.
"""

import re
import shlex
import subprocess
from collections.abc import Sequence

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
from prodmon.submission.config import setting

COMMAND_TIMEOUT_S = 60

# JobState -> normalised state. Anything else (a newer Slurm's state) is "unknown".
STATES = {
    "PENDING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_FED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.HELD,
    "RESV_DEL_HOLD": BatchState.HELD,
    "CONFIGURING": BatchState.RUNNING,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    "COMPLETED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED,
    "TIMEOUT": BatchState.FAILED,
    "OUT_OF_MEMORY": BatchState.FAILED,
    "NODE_FAIL": BatchState.FAILED,
    "BOOT_FAIL": BatchState.FAILED,
    "DEADLINE": BatchState.FAILED,
    "PREEMPTED": BatchState.FAILED,
    "SPECIAL_EXIT": BatchState.FAILED,
    "CANCELLED": BatchState.CANCELLED,
    "REVOKED": BatchState.CANCELLED,
}
HELD_REASONS = ("JobHeldUser", "JobHeldAdmin")


def _run(argv: list[str], *, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SubmissionError(f"{argv[0]} failed: {exc}", command=shell_join(argv)) from exc


def walltime_minutes(seconds: int) -> int:
    return max(1, -(-int(seconds) // 60))


def batch_script(spec: JobSpec) -> str:
    argv = reporter_argv(
        python=str(setting("PRODMON_SUBMISSION_PYTHON")),
        reporter=str(setting("PRODMON_SUBMISSION_REPORTER")),
        command=spec.command,
    )
    return (
        f"#!/bin/sh\n# prodmon attempt {spec.attempt_uid}: {spec.name}\nexec {shell_join(argv)}\n"
    )


def parse_scontrol(line: str) -> dict[str, str]:
    """`scontrol show job -o ID`: one line of Key=Value pairs (values may hold spaces
    only in the last few keys, which we do not read)."""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))


def status_from_fields(batch_id: str, raw: str, reason: str, exit_field: str = "") -> BatchStatus:
    raw = raw.split()[0] if raw else ""
    state = STATES.get(raw, BatchState.UNKNOWN)
    if state == BatchState.QUEUED and reason in HELD_REASONS:
        state = BatchState.HELD
    exit_code = signal = None
    if exit_field and ":" in exit_field:
        code, sig = exit_field.split(":", 1)
        if code.isdigit() and sig.isdigit():
            exit_code, signal = int(code), int(sig) or None
    if state not in BatchState.ENDED:
        exit_code = signal = None
    return BatchStatus(
        batch_id,
        state,
        raw_state=raw,
        exit_code=exit_code,
        signal=signal,
        reason="" if reason in ("None", "(null)") else reason,
    )


class SlurmBackend:
    name = "slurm"

    def __init__(self):
        self._nodes: list[str] | None = None

    def cluster_nodes(self) -> list[str]:
        """Node names this cluster knows, so an exclusion list naming nodes of other
        sites does not make sbatch refuse the job ("Invalid node name")."""
        if self._nodes is None:
            proc = _run(["sinfo", "-h", "-N", "-o", "%N"])
            self._nodes = sorted(set(proc.stdout.split())) if proc.returncode == 0 else []
        return self._nodes

    def excluded(self, hostnames: Sequence[str]) -> list[str]:
        wanted = set(hostnames) | {h.split(".")[0] for h in hostnames}
        return [n for n in self.cluster_nodes() if n in wanted or n.split(".")[0] in wanted]

    def sbatch_argv(self, spec: JobSpec, script: str, exclude: Sequence[str] = ()) -> list[str]:
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={spec.name}",
            f"--chdir={spec.workdir}",
            f"--output={spec.workdir / 'job.log'}",
            f"--cpus-per-task={spec.cores}",
        ]
        if spec.memory_mb:
            argv.append(f"--mem={spec.memory_mb}M")
        if spec.walltime_s:
            argv.append(f"--time={walltime_minutes(spec.walltime_s)}")
        if exclude:
            argv.append(f"--exclude={','.join(exclude)}")
        for option, name in (
            ("--partition", "PRODMON_SLURM_PARTITION"),
            ("--account", "PRODMON_SLURM_ACCOUNT"),
        ):
            if setting(name):
                argv.append(f"{option}={setting(name)}")
        env = base_environment(spec.environment)
        argv.append(f"--export={','.join(sorted(env))}")
        argv.append(script)
        return argv

    def submit(self, spec: JobSpec) -> SubmitResult:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        script = spec.workdir / "job.sh"
        script.write_text(batch_script(spec))
        script.chmod(0o755)
        argv = self.sbatch_argv(spec, str(script), self.excluded(spec.exclude_nodes))
        command = shell_join(argv)
        proc = _run(argv, env=base_environment(spec.environment), cwd=spec.workdir)
        output = (proc.stdout + proc.stderr).strip()
        batch_id = proc.stdout.strip().split(";")[0] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not batch_id.isdigit():
            raise SubmissionError(
                f"sbatch failed (exit {proc.returncode})", command=command, output=output
            )
        return SubmitResult(batch_id=batch_id, command=command, output=output)

    def _control(self, argv: list[str]) -> str:
        proc = _run(argv)
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0 and not text:
            text = "ok"
        return f"{shlex.join(argv)}: {text}"

    def cancel(self, ref: BatchRef) -> str:
        return self._control(["scancel", ref.batch_id])

    def hold(self, ref: BatchRef) -> str:
        return self._control(["scontrol", "hold", ref.batch_id])

    def release(self, ref: BatchRef) -> str:
        return self._control(["scontrol", "release", ref.batch_id])

    def status(self, refs: Sequence[BatchRef]) -> dict[str, BatchStatus]:
        ids = [r.batch_id for r in refs if r.batch_id.isdigit()]
        out: dict[str, BatchStatus] = {}
        if not ids:
            return out
        proc = _run(["squeue", "-h", "-o", "%i|%T|%r", f"--jobs={','.join(ids)}"])
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3 and parts[0] in ids:
                    out[parts[0]] = status_from_fields(parts[0], parts[1], parts[2])
        # Jobs that left the queue: scontrol still knows them for MinJobAge (300 s).
        for batch_id in ids:
            if batch_id in out and out[batch_id].state not in BatchState.ENDED:
                continue
            proc = _run(["scontrol", "show", "job", "-o", batch_id])
            if proc.returncode != 0 or "JobState=" not in proc.stdout:
                continue
            fields = parse_scontrol(proc.stdout)
            out[batch_id] = status_from_fields(
                batch_id,
                fields.get("JobState", ""),
                fields.get("Reason", ""),
                fields.get("ExitCode", ""),
            )
        return out

    def events(self, ref: BatchRef) -> list:
        return []
