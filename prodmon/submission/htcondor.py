"""The HTCondor backend: submit, remove, hold, release and query through the
`htcondor` Python bindings (the wheel's `htcondor2` module, or the older
`htcondor`), and the job event log read with `JobEventLog`.

Not run against a live schedd (none can run where this was written): the
submit description is tested exactly, the event-log reading is tested on real
HTCondor event logs, and the schedd calls follow the bindings' documented API.

The reporter and the attempt's token file travel with the job
(transfer_input_files); the job's environment is the submit description's
`environment` (getenv is off, so nothing of the submit host leaks in). The
event log (`log`) is written on the submit host, in the attempt's directory,
where the poll reads exit codes, signals and hold reasons from it.
"""

import datetime as dt
import importlib
import re
from collections.abc import Sequence
from pathlib import Path

from prodmon.submission.base import (
    BatchEventSpec,
    BatchRef,
    BatchState,
    BatchStatus,
    JobSpec,
    SubmissionError,
    SubmitResult,
)
from prodmon.submission.config import setting

EVENT_LOG_NAME = "condor.log"
REPORTER_NAME = "prodmon_report.py"

# JobStatus codes of the job ClassAd.
JOB_STATUS = {
    1: BatchState.QUEUED,  # Idle
    2: BatchState.RUNNING,  # Running
    3: BatchState.CANCELLED,  # Removed
    4: BatchState.SUCCEEDED,  # Completed (refined by ExitCode below)
    5: BatchState.HELD,  # Held
    6: BatchState.RUNNING,  # Transferring output
    7: BatchState.RUNNING,  # Suspended
}
JOB_STATUS_NAMES = {
    1: "idle",
    2: "running",
    3: "removed",
    4: "completed",
    5: "held",
    6: "transferring_output",
    7: "suspended",
}


def bindings():
    """The bindings module: `htcondor2` in current wheels, `htcondor` in older ones."""
    for name in ("htcondor2", "htcondor"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise SubmissionError("the htcondor Python bindings are not installed (pip install htcondor)")


# --- submit description ---------------------------------------------------------


def quote_args(args: Sequence[str]) -> str:
    """HTCondor's "new" argument syntax: the whole list in double quotes, each
    argument in single quotes; a single quote is doubled inside an argument and
    a double quote is doubled everywhere."""
    parts = ["'" + str(a).replace("'", "''") + "'" for a in args]
    return '"' + " ".join(parts).replace('"', '""') + '"'


def quote_environment(env: dict[str, str]) -> str:
    """The "new" environment syntax: "NAME='value' NAME='value'" with the same quoting."""
    parts = [f"{k}='" + str(v).replace("'", "''") + "'" for k, v in sorted(env.items())]
    return '"' + " ".join(parts).replace('"', '""') + '"'


def submit_description(spec: JobSpec) -> dict[str, str]:
    """The exact submit description for one attempt, in a stable order."""
    env = dict(spec.environment)
    # The token file is transferred into the job's scratch directory.
    env["PRODMON_TOKEN_FILE"] = spec.token_file.name
    desc = {
        "universe": "vanilla",
        "batch_name": spec.name,
        "executable": str(setting("PRODMON_HTCONDOR_PYTHON")),
        "transfer_executable": "false",
        # The executable is the Python; the reporter wraps the payload.
        "arguments": quote_args([REPORTER_NAME, "--", "/bin/sh", "-c", spec.command]),
        "environment": quote_environment(env),
        "getenv": "false",
        "initialdir": str(spec.workdir),
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        "transfer_input_files": ",".join(
            [str(setting("PRODMON_SUBMISSION_REPORTER")), str(spec.token_file)]
        ),
        "output": "job.out",
        "error": "job.err",
        "log": EVENT_LOG_NAME,
        "request_cpus": str(spec.cores),
    }
    if spec.memory_mb:
        desc["request_memory"] = f"{spec.memory_mb}MB"
    if spec.walltime_s:
        # Removed (not held) when it runs longer; the event log records why.
        desc["allowed_execute_duration"] = str(int(spec.walltime_s))
    if spec.exclude_nodes:
        desc["requirements"] = " && ".join(
            f'(TARGET.Machine =!= "{h}")' for h in sorted(spec.exclude_nodes)
        )
    desc["+ProdmonAttempt"] = f'"{spec.attempt_uid}"'
    return desc


# --- event log ------------------------------------------------------------------


def _plain(value):
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _event_time(event) -> dt.datetime:
    return dt.datetime.fromtimestamp(event.timestamp, tz=dt.UTC)


def event_from_condor(seq: int, event) -> tuple[int, int, BatchEventSpec]:
    """(cluster, proc, event) from one bindings JobEvent."""
    data = {k: _plain(v) for k, v in event.items()}
    kind = event.type.name.lower()
    exit_code = signal = hold_code = hold_subcode = None
    reason = ""
    if kind in ("job_terminated", "node_terminated"):
        if data.get("TerminatedNormally"):
            exit_code = data.get("ReturnValue")
        else:
            signal = data.get("TerminatedBySignal")
    elif kind == "job_held":
        hold_code = data.get("HoldReasonCode")
        hold_subcode = data.get("HoldReasonSubCode")
        reason = data.get("HoldReason") or ""
    else:
        reason = str(
            data.get("Reason") or data.get("Message") or data.get("DisconnectReason") or ""
        )
    spec = BatchEventSpec(
        seq=seq,
        kind=kind,
        at=_event_time(event),
        event_code=int(event.type),
        exit_code=exit_code,
        signal=signal,
        hold_reason_code=hold_code,
        hold_reason_subcode=hold_subcode,
        reason=reason,
        data=data,
    )
    return event.cluster, event.proc, spec


def event_log_read(path: Path | str, *, cluster: int | None = None) -> list[BatchEventSpec]:
    """Every event of an HTCondor job event log, oldest first; with `cluster`,
    only that cluster's. `seq` is the event's position in the whole log."""
    jel = bindings().JobEventLog(str(path))
    out = []
    for seq, event in enumerate(jel.events(stop_after=0)):
        ev_cluster, _, spec = event_from_condor(seq, event)
        if cluster is None or ev_cluster == cluster:
            out.append(spec)
    return out


def event_log_status(batch_id: str, events: Sequence[BatchEventSpec]) -> BatchStatus | None:
    """Where a job stands after its events, as the schedd would say it."""
    state = raw = None
    exit_code = signal = hold_code = hold_subcode = None
    reason = ""
    for ev in events:
        if ev.kind in (
            "submit",
            "job_released",
            "job_evicted",
            "shadow_exception",
            "job_reconnect_failed",
        ):
            state = BatchState.QUEUED
        elif ev.kind in ("execute", "job_unsuspended", "job_reconnected"):
            state = BatchState.RUNNING
        elif ev.kind == "job_held":
            state = BatchState.HELD
            hold_code, hold_subcode, reason = (
                ev.hold_reason_code,
                ev.hold_reason_subcode,
                ev.reason,
            )
        elif ev.kind == "job_terminated":
            exit_code, signal = ev.exit_code, ev.signal
            state = BatchState.SUCCEEDED if exit_code == 0 and signal is None else BatchState.FAILED
        elif ev.kind == "job_aborted":
            state = BatchState.CANCELLED
            reason = ev.reason
        else:
            continue
        raw = ev.kind
    if state is None:
        return None
    return BatchStatus(
        batch_id,
        state,
        raw_state=raw,
        exit_code=exit_code,
        signal=signal,
        reason=reason,
        hold_reason_code=hold_code,
        hold_reason_subcode=hold_subcode,
    )


def _cluster_of(batch_id: str) -> int | None:
    m = re.fullmatch(r"(\d+)(?:\.\d+)?", batch_id)
    return int(m.group(1)) if m else None


# --- the backend -----------------------------------------------------------------


class HTCondorBackend:
    name = "htcondor"

    def _schedd(self):
        htcondor = bindings()
        name = setting("PRODMON_HTCONDOR_SCHEDD")
        try:
            if name:
                ad = htcondor.Collector().locate(htcondor.DaemonType.Schedd, name)
                return htcondor.Schedd(ad)
            return htcondor.Schedd()
        except Exception as exc:  # noqa: BLE001 - the bindings raise several kinds
            raise SubmissionError(f"cannot reach the schedd: {exc}") from exc

    def submit(self, spec: JobSpec) -> SubmitResult:
        htcondor = bindings()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        desc = submit_description(spec)
        text = str(htcondor.Submit(desc))
        try:
            result = self._schedd().submit(htcondor.Submit(desc), count=1)
        except SubmissionError as exc:
            exc.command = text
            raise
        except Exception as exc:  # noqa: BLE001
            raise SubmissionError(f"condor submit failed: {exc}", command=text) from exc
        batch_id = f"{result.cluster()}.0"
        return SubmitResult(batch_id=batch_id, command=text, output=f"submitted as {batch_id}")

    def _act(self, action_name: str, ref: BatchRef) -> str:
        htcondor = bindings()
        cluster = _cluster_of(ref.batch_id)
        if cluster is None:
            return f"{ref.batch_id} is not an HTCondor job id"
        try:
            ad = self._schedd().act(
                getattr(htcondor.JobAction, action_name),
                f"ClusterId == {cluster}",
                reason="prodmon",
            )
        except Exception as exc:  # noqa: BLE001
            return f"{action_name} {ref.batch_id} failed: {exc}"
        return f"{action_name} {ref.batch_id}: {dict(ad.items()) if ad is not None else 'ok'}"

    def cancel(self, ref: BatchRef) -> str:
        return self._act("Remove", ref)

    def hold(self, ref: BatchRef) -> str:
        return self._act("Hold", ref)

    def release(self, ref: BatchRef) -> str:
        return self._act("Release", ref)

    def status(self, refs: Sequence[BatchRef]) -> dict[str, BatchStatus]:
        """From the event log first (it survives the job leaving the queue), then
        the schedd for jobs whose log says nothing yet."""
        out: dict[str, BatchStatus] = {}
        missing = []
        for ref in refs:
            status = event_log_status(ref.batch_id, self.events(ref))
            if status is not None:
                out[ref.batch_id] = status
            elif _cluster_of(ref.batch_id) is not None:
                missing.append(ref.batch_id)
        if missing:
            try:
                ads = self._schedd().query(
                    constraint=" || ".join(f"ClusterId == {_cluster_of(b)}" for b in missing),
                    projection=[
                        "ClusterId",
                        "JobStatus",
                        "ExitCode",
                        "ExitBySignal",
                        "ExitSignal",
                        "HoldReason",
                        "HoldReasonCode",
                        "HoldReasonSubCode",
                    ],
                )
            except SubmissionError:
                ads = []
            for ad in ads:
                batch_id = f"{ad['ClusterId']}.0"
                code = int(ad.get("JobStatus", 0))
                state = JOB_STATUS.get(code, BatchState.UNKNOWN)
                exit_code = ad.get("ExitCode")
                signal = ad.get("ExitSignal") if ad.get("ExitBySignal") else None
                if state == BatchState.SUCCEEDED and (exit_code or signal):
                    state = BatchState.FAILED
                out[batch_id] = BatchStatus(
                    batch_id,
                    state,
                    raw_state=JOB_STATUS_NAMES.get(code, str(code)),
                    exit_code=exit_code,
                    signal=signal,
                    reason=str(ad.get("HoldReason", "") or ""),
                    hold_reason_code=ad.get("HoldReasonCode"),
                    hold_reason_subcode=ad.get("HoldReasonSubCode"),
                )
        return out

    def events(self, ref: BatchRef) -> list[BatchEventSpec]:
        path = ref.workdir / EVENT_LOG_NAME
        if not path.exists():
            return []
        return event_log_read(path, cluster=_cluster_of(ref.batch_id))
