"""Success beyond the exit code: declared outputs, their integrity, and a
user-provided check command. Pure functions; triage.services applies them.

Job.expected_outputs is a list whose items are a name or a glob ("*.root"),
or a dict {"name": ..., "size": ..., "checksum": "adler32:0a1b2c3d"}. An item
is satisfied by the attempt's OutputFile rows whose name (or base name)
matches it; every match must be non-empty, and a size or checksum given must
agree with every match.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shlex
import signal
import subprocess
import tempfile
from dataclasses import dataclass

from triage import kb
from triage.classify import ClassSpec, Source

MAX_CHECK_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class OutputFact:
    name: str
    size: int
    checksum: str = ""


@dataclass(frozen=True)
class CheckFailure:
    kind: str  # a key of CHECK_CLASSES
    reason: str  # one line for the shifter (and the audit log)


_C = kb.Category
_A = kb.Action
CHECK_CLASSES: dict[str, ClassSpec] = {
    spec.key.split(":", 1)[1]: spec
    for spec in (
        ClassSpec(
            key="check:missing-output",
            source=Source.CHECK,
            title="Declared output missing",
            category=_C.SOFTWARE,
            transient=False,
            action=_A.INVESTIGATE,
            explanation="The job exited 0 but did not produce an output it declares.",
        ),
        ClassSpec(
            key="check:empty-output",
            source=Source.CHECK,
            title="Output file is empty",
            category=_C.SOFTWARE,
            transient=True,
            action=_A.RETRY,
            explanation="The job exited 0 but a declared output has size 0.",
        ),
        ClassSpec(
            key="check:size-mismatch",
            source=Source.CHECK,
            title="Output size does not match",
            category=_C.SITE,
            transient=True,
            action=_A.RETRY,
            explanation="An output's size differs from the size declared for it (truncated copy?).",
        ),
        ClassSpec(
            key="check:checksum-mismatch",
            source=Source.CHECK,
            title="Output checksum does not match",
            category=_C.SITE,
            transient=True,
            action=_A.RETRY,
            explanation="An output's checksum differs from the one declared: the data is corrupt.",
        ),
        ClassSpec(
            key="check:ended-early",
            source=Source.CHECK,
            title="Job ended early",
            category=_C.UNKNOWN,
            transient=True,
            action=_A.RETRY,
            explanation="The job exited 0 but processed fewer events than the job expects: "
            "it ended early without notice. The unprocessed event range must be redone.",
        ),
        ClassSpec(
            key="check:command-failed",
            source=Source.CHECK,
            title="Success check failed",
            category=_C.SOFTWARE,
            transient=False,
            action=_A.INVESTIGATE,
            explanation="The stage's or campaign's check command rejected the attempt.",
        ),
        ClassSpec(
            key="check:command-timeout",
            source=Source.CHECK,
            title="Success check timed out",
            category=_C.UNKNOWN,
            transient=True,
            action=_A.INVESTIGATE,
            explanation="The check command did not finish within its timeout.",
        ),
    )
}


def _expected_items(expected) -> list[dict]:
    items = []
    for item in expected or []:
        if isinstance(item, str) and item:
            items.append({"name": item})
        elif isinstance(item, dict) and item.get("name"):
            items.append(item)
    return items


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(
        posixpath.basename(name), pattern
    )


def _parse_checksum(value: str) -> tuple[str, int] | None:
    value = (value or "").strip().lower()
    if not value:
        return None
    algo, _, digest = value.rpartition(":")
    try:
        return algo, int(digest, 16)
    except ValueError:
        return None


def checksums_agree(expected: str, actual: str) -> bool | None:
    """True/False when comparable, None when the algorithms differ or one is missing."""
    want, got = _parse_checksum(expected), _parse_checksum(actual)
    if want is None or got is None:
        return None
    if want[0] and got[0] and want[0] != got[0]:
        return None
    return want[1] == got[1]


def check_outputs(expected, outputs: list[OutputFact]) -> CheckFailure | None:
    """The first problem with the declared outputs, or None."""
    for item in _expected_items(expected):
        pattern = str(item["name"])
        found = [o for o in outputs if _matches(pattern, o.name)]
        if not found:
            return CheckFailure("missing-output", f"declared output {pattern!r} was not produced")
        for output in found:
            if output.size <= 0:
                return CheckFailure("empty-output", f"output {output.name!r} is empty")
            size = item.get("size")
            if size is not None and int(size) != output.size:
                return CheckFailure(
                    "size-mismatch",
                    f"output {output.name!r} has {output.size} bytes, expected {int(size)}",
                )
            checksum = item.get("checksum")
            if checksum:
                agree = checksums_agree(str(checksum), output.checksum)
                if agree is False or (agree is None and not output.checksum):
                    return CheckFailure(
                        "checksum-mismatch",
                        f"output {output.name!r} has checksum {output.checksum or 'none'}, "
                        f"expected {checksum}",
                    )
    return None


def check_events(*, processed: int | None, expected: int | None) -> CheckFailure | None:
    """An attempt that claims success must have processed every expected event
    (when both are known)."""
    if expected and processed is not None and processed < expected:
        return CheckFailure(
            "ended-early", f"processed {processed} of {expected} expected events: ended early"
        )
    return None


def check_environment(*, attempt_facts: dict, outputs: list[OutputFact]) -> dict[str, str]:
    """The environment a check command sees: PATH and locale, plus the attempt's facts.

    Nothing else from the worker's environment (no secrets) is passed on.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PRODMON_OUTPUT_COUNT": str(len(outputs)),
        "PRODMON_OUTPUT_NAMES": "\n".join(o.name for o in outputs),
        "PRODMON_OUTPUT_SIZES": "\n".join(str(o.size) for o in outputs),
        "PRODMON_OUTPUTS": json.dumps(
            [{"name": o.name, "size": o.size, "checksum": o.checksum} for o in outputs]
        ),
    }
    for key, value in attempt_facts.items():
        env[f"PRODMON_{key.upper()}"] = "" if value is None else str(value)
    return env


def run_check_command(
    command: str, *, stdin: bytes, env: dict[str, str], timeout_s: float
) -> CheckFailure | None:
    """Run a check command (no shell). Non-zero exit or a timeout is a failure.

    Raises OSError when the command cannot be started at all (a broken check
    is the check's problem, not the attempt's).
    """
    argv = shlex.split(command)
    with tempfile.TemporaryDirectory(prefix="prodmon-check-") as workdir:
        process = subprocess.Popen(  # noqa: S603 - argv from staff-only config, no shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,  # so a timeout can kill the whole process group
        )
        try:
            out, err = process.communicate(input=stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return CheckFailure(
                "command-timeout", f"check {argv[0]!r} did not finish within {timeout_s:g} s"
            )
    if process.returncode == 0:
        return None
    said = _last_line(err) or _last_line(out)
    reason = f"check {argv[0]!r} exited with {process.returncode}"
    if process.returncode < 0:
        reason = f"check {argv[0]!r} was killed by signal {-process.returncode}"
    return CheckFailure("command-failed", f"{reason}: {said}" if said else reason)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_line(data: bytes) -> str:
    text = data[-MAX_CHECK_OUTPUT:].decode("utf-8", "replace").strip()
    return text.splitlines()[-1][:300] if text else ""
