"""HTCondor hold reason codes 0-49 and their subcodes. Our own descriptions.

A held job's hold code and subcode are read from the log tail, in either the
job event log form ("Job was held." ... "Code 13 Subcode 256") or the ClassAd
form ("HoldReasonCode = 13", "HoldReasonSubCode = 256"); see `parse_hold`.

Subcodes: for the file-transfer codes (12, 13) a subcode of 62 (ETIME) means
the transfer plug-in timed out, and a multiple of 256 is the plug-in's exit
code shifted left by eight bits; for 6-10, 12-14 it is otherwise a Unix errno;
34 names the resource (102 memory, 104 disk); -1001 to -1004 are file-transfer
plug-in problems usable with any code.
"""

# ruff: noqa: E501 - a data table reads best one entry per line

from __future__ import annotations

import errno
import os
import re

from triage.kb import HOLD_FAMILY as FAMILY
from triage.kb import Action as A
from triage.kb import Category as C
from triage.kb import KbEntry, entry


def _h(code, symbol, category, transient, action, title, explanation=""):
    return entry(FAMILY, code, symbol, category, transient, action, title, explanation)


# fmt: off
_ROWS = [
    _h(0, "Unspecified", C.UNKNOWN, True, A.RETRY, "Held (no reason code)", "HTCondor held the job without a specific reason code."),
    _h(1, "UserRequest", C.UNKNOWN, False, A.OPERATOR, "Held by a user (condor_hold)", "Someone put the job on hold by hand."),
    _h(2, "GlobusGramError", C.SITE, True, A.RETRY_ELSEWHERE, "Held: Globus GRAM error", "The grid gateway reported an error; the subcode is its error number."),
    _h(3, "JobPolicy", C.CONFIG, False, A.FIX_CONFIG, "Held by the job's own policy", "The job's periodic_hold or on_exit_hold expression became true."),
    _h(4, "CorruptedCredential", C.CONFIG, False, A.CHECK_CREDENTIALS, "Held: credentials invalid", "The job's credentials are not valid."),
    _h(5, "JobPolicyUndefined", C.CONFIG, False, A.FIX_CONFIG, "Held: job policy undefined", "A policy expression of the job could not be evaluated."),
    _h(6, "FailedToCreateProcess", C.CONFIG, False, A.FIX_CONFIG, "Held: could not start the executable", "The starter failed to launch the job's program."),
    _h(7, "UnableToOpenOutput", C.SITE, True, A.RETRY_ELSEWHERE, "Held: cannot open stdout file", "The job's standard output file could not be opened."),
    _h(8, "UnableToOpenInput", C.CONFIG, False, A.FIX_CONFIG, "Held: cannot open stdin file", "The job's standard input file could not be opened."),
    _h(9, "UnableToOpenOutputStream", C.SITE, True, A.RETRY, "Held: cannot open output stream", "The standard output stream could not be opened."),
    _h(10, "UnableToOpenInputStream", C.SITE, True, A.RETRY, "Held: cannot open input stream", "The standard input stream could not be opened."),
    _h(11, "InvalidTransferAck", C.SITE, True, A.RETRY, "Held: file transfer protocol error", "HTCondor's file transfer protocol failed internally."),
    _h(12, "TransferOutputError", C.SITE, True, A.CHECK_STORAGE, "Held: output transfer failed", "Transferring the job's output (or checkpoint) files back failed."),
    _h(13, "TransferInputError", C.SITE, True, A.CHECK_STORAGE, "Held: input transfer failed", "Transferring the job's input files to the execute node failed."),
    _h(14, "IwdError", C.CONFIG, False, A.FIX_CONFIG, "Held: initial directory not accessible", "The job's initial working directory is missing or not writable."),
    _h(15, "SubmittedOnHold", C.UNKNOWN, False, A.OPERATOR, "Submitted on hold", "The job was submitted in the held state on purpose."),
    _h(16, "SpoolingInput", C.UNKNOWN, True, A.RETRY, "Held while spooling input", "Input files are still being spooled; wait for it to finish."),
    _h(17, "JobShadowMismatch", C.SITE, False, A.SITE_TICKET, "Held: shadow version mismatch", "The job is incompatible with the shadow on the submit machine."),
    _h(18, "InvalidTransferGoAhead", C.SITE, True, A.RETRY, "Held: file transfer protocol error", "HTCondor's file transfer protocol failed internally."),
    _h(19, "HookPrepareJobFailure", C.SITE, True, A.SITE_TICKET, "Held: prepare-job hook failed", "The site's prepare-job hook could not run or reported failure."),
    _h(20, "MissedDeferredExecutionTime", C.CONFIG, False, A.FIX_CONFIG, "Held: missed its start time", "The job was deferred to a time that has passed."),
    _h(21, "StartdHeldJob", C.SITE, True, A.RETRY_ELSEWHERE, "Held by the execute machine's policy", "The execute node's WANT_HOLD policy held the job."),
    _h(22, "UnableToInitUserLog", C.CONFIG, False, A.FIX_CONFIG, "Held: cannot write the job log", "The job event log could not be initialised (its directory must be writable)."),
    _h(23, "FailedToAccessUserAccount", C.SITE, True, A.SITE_TICKET, "Held: cannot access user account", "HTCondor could not switch to the job owner's account."),
    _h(24, "NoCompatibleShadow", C.SITE, False, A.SITE_TICKET, "Held: no compatible shadow", "No shadow process can run this job."),
    _h(25, "InvalidCronSettings", C.CONFIG, False, A.FIX_CONFIG, "Held: invalid cron settings", "The job's cron-style schedule is invalid."),
    _h(26, "SystemPolicy", C.RESOURCE, False, A.INVESTIGATE, "Held by the system policy", "The pool's SYSTEM_PERIODIC_HOLD became true, typically for a resource limit."),
    _h(27, "SystemPolicyUndefined", C.SITE, False, A.SITE_TICKET, "Held: system policy undefined", "The pool's hold policy could not be evaluated."),
    _h(28, "GlexecChownSandboxToUser", C.SITE, True, A.SITE_TICKET, "Held: sandbox ownership change failed", "Handing the sandbox to the user (glexec) failed."),
    _h(29, "PrivsepChownSandboxToUser", C.SITE, True, A.SITE_TICKET, "Held: sandbox ownership change failed", "Handing the sandbox to the user (privsep) failed."),
    _h(30, "GlexecChownSandboxToCondor", C.SITE, True, A.SITE_TICKET, "Held: sandbox ownership change failed", "Taking the sandbox back from the user (glexec) failed."),
    _h(31, "PrivsepChownSandboxToCondor", C.SITE, True, A.SITE_TICKET, "Held: sandbox ownership change failed", "Taking the sandbox back from the user (privsep) failed."),
    _h(32, "MaxTransferInputSizeExceeded", C.RESOURCE, False, A.FIX_CONFIG, "Held: input transfer too large", "The input files exceed the pool's maximum transfer size."),
    _h(33, "MaxTransferOutputSizeExceeded", C.RESOURCE, False, A.FIX_CONFIG, "Held: output transfer too large", "The output files exceed the pool's maximum transfer size."),
    _h(34, "JobOutOfResources", C.RESOURCE, False, A.INVESTIGATE, "Held: resource limit exceeded", "The job used more of a provisioned resource than it requested; the subcode says which."),
    _h(35, "InvalidDockerImage", C.CONFIG, False, A.FIX_CONFIG, "Held: invalid Docker image", "The docker_image in the submit description is not valid."),
    _h(36, "FailedToCheckpoint", C.SOFTWARE, False, A.FIX_SOFTWARE, "Held: checkpoint failed", "The job failed when sent the checkpoint signal it asked for."),
    _h(37, "EC2UserError", C.CONFIG, False, A.FIX_CONFIG, "Held: EC2 user error", "A user error in the EC2 universe."),
    _h(38, "EC2InternalError", C.SITE, True, A.RETRY, "Held: EC2 internal error", "An internal error in the EC2 universe."),
    _h(39, "EC2AdminError", C.SITE, False, A.SITE_TICKET, "Held: EC2 administrator error", "An administrator error in the EC2 universe."),
    _h(40, "EC2ConnectionProblem", C.SITE, True, A.RETRY, "Held: EC2 connection problem", "A connection problem in the EC2 universe."),
    _h(41, "EC2ServerError", C.SITE, True, A.RETRY, "Held: EC2 server error", "A server error in the EC2 universe."),
    _h(42, "EC2InstancePotentiallyLostError", C.SITE, True, A.SITE_TICKET, "Held: EC2 instance possibly lost", "An EC2 instance may be running unaccounted for."),
    _h(43, "PreScriptFailed", C.CONFIG, False, A.FIX_CONFIG, "Held: pre-script failed", "The script run before the job failed."),
    _h(44, "PostScriptFailed", C.CONFIG, False, A.FIX_CONFIG, "Held: post-script failed", "The script run after the job failed."),
    _h(45, "SingularityTestFailed", C.SITE, True, A.RETRY_ELSEWHERE, "Held: container runtime test failed", "Testing Singularity/Apptainer on the node failed before the job started."),
    _h(46, "JobDurationExceeded", C.RESOURCE, False, A.MORE_TIME, "Held: allowed duration exceeded", "The job ran longer than its allowed duration."),
    _h(47, "JobExecuteExceeded", C.RESOURCE, False, A.MORE_TIME, "Held: allowed execution time exceeded", "The job executed longer than allowed."),
    _h(48, "HookShadowPrepareJobFailure", C.SITE, True, A.SITE_TICKET, "Held: shadow prepare hook failed", "The shadow's prepare-job hook asked for the job to be held."),
    _h(49, "CannotSwitchPrimaryGroup", C.SITE, True, A.SITE_TICKET, "Held: cannot switch primary group", "HTCondor could not switch the job to its primary group."),
]
# fmt: on

TABLE: dict[int, KbEntry] = {row.code: row for row in _ROWS}

# Codes whose subcode is a Unix errno.
_ERRNO_CODES = {6, 7, 8, 9, 10, 12, 13, 14}
_GENERIC_SUBCODES = {
    -1001: ("transfer plug-in not found", C.SITE, False, A.SITE_TICKET),
    -1002: ("transfer plug-in not operational", C.SITE, True, A.RETRY_ELSEWHERE),
    -1003: ("transfer plug-in could not be executed", C.SITE, True, A.RETRY_ELSEWHERE),
    -1004: ("transfer plug-in reported no result", C.SITE, True, A.RETRY),
}
_EC2_SUBCODES = {
    37: {1: "public key file not defined", 2: "private key file not defined",
         4: "grid resource lacks the EC2 service URL", 9: "authentication failed",
         10: "existing SSH key pair unusable with this server type", 20: "request cancelled"},
    38: {3: "grid resource type is not EC2", 5: "grid resource type not set",
         7: "grid job id is not an EC2 one", 21: "unexpected remote job status"},
    39: {6: "EC2_GAHP not defined"},
    40: {11: "while creating an SSH key pair", 12: "while starting an on-demand instance",
         17: "while requesting a spot instance"},
    41: {13: "abnormal instance termination", 14: "unrecognised instance termination",
         22: "resource down too long"},
    42: {15: "connection error while terminating an instance",
         16: "terminating the instance failed too often",
         17: "connection error while cancelling a spot request",
         18: "cancelling a spot request failed too often",
         19: "spot request purged before an instance id was known"},
}  # fmt: skip


def lookup_hold(code: int, subcode: int | None = None) -> KbEntry | None:
    """The entry for a hold code, refined by its subcode where the subcode means something."""
    base = TABLE.get(code)
    if base is None:
        return None
    if subcode is None or subcode == 0:
        return base
    detail = _subcode_detail(code, subcode)
    if detail is None:
        return base
    title, category, transient, action, explanation = detail
    return KbEntry(
        family=FAMILY,
        code=code,
        subcode=subcode,
        symbol=base.symbol,
        title=f"{base.title}: {title}",
        category=category or base.category,
        transient=base.transient if transient is None else transient,
        action=action or base.action,
        explanation=f"{base.describe()} {explanation}".strip(),
    )


def _subcode_detail(code: int, subcode: int):
    if subcode in _GENERIC_SUBCODES:
        text, category, transient, action = _GENERIC_SUBCODES[subcode]
        return text, category, transient, action, f"Subcode {subcode}: the file {text}."
    if code == 34:
        if subcode == 102:
            return (
                "memory",
                C.RESOURCE,
                False,
                "Resubmit with a larger request_memory, or let HTCondor raise it on retry "
                "(retry_request_memory).",
                "The job used more memory than it requested.",
            )
        if subcode == 104:
            return (
                "disk",
                C.RESOURCE,
                False,
                "Resubmit with a larger request_disk, or let HTCondor raise it on retry "
                "(retry_request_disk).",
                "The job used more scratch disk than it requested.",
            )
        return None
    if code in (12, 13):
        if subcode == 62:
            return (
                "transfer plug-in timed out",
                C.SITE,
                True,
                A.CHECK_STORAGE,
                "The file-transfer plug-in ran out of time (ETIME).",
            )
        if subcode > 0 and subcode % 256 == 0:
            status = subcode >> 8
            return (
                f"transfer plug-in exited with {status}",
                C.SITE,
                True,
                A.CHECK_STORAGE,
                f"The file-transfer plug-in failed with exit status {status}.",
            )
    if code in _ERRNO_CODES and 0 < subcode < 4096:
        name = errno.errorcode.get(subcode)
        if name is None:
            return None
        message = os.strerror(subcode)
        category, transient, action = None, None, None
        if name in ("ENOENT", "ENOTDIR"):
            category, transient = (C.INPUT if code == 13 else C.CONFIG), False
            action = A.FIX_CONFIG if code != 13 else A.CHECK_INPUT
        elif name in ("EACCES", "EPERM"):
            category, transient, action = C.CONFIG, False, A.CHECK_CREDENTIALS
        elif name in ("ENOSPC", "EDQUOT"):
            category, transient, action = C.RESOURCE, True, A.MORE_DISK
        return (
            f"{name} ({message.lower()})",
            category,
            transient,
            action,
            f"The operating system said: {message} ({name}).",
        )
    if code in _EC2_SUBCODES and subcode in _EC2_SUBCODES[code]:
        text = _EC2_SUBCODES[code][subcode]
        return text, None, None, None, f"Detail: {text}."
    return None


_HELD_EVENT = re.compile(r"^\s*012 \(\S+\) .*Job was held")
_CODE_SUBCODE = re.compile(r"\bCode (\d+) Subcode (-?\d+)\b")
_AD_CODE = re.compile(r"\bHoldReasonCode\s*=\s*(\d+)\b")
_AD_SUBCODE = re.compile(r"\bHoldReasonSubCode\s*=\s*(-?\d+)\b")


def parse_hold(lines: list[str]) -> tuple[int, int | None, int] | None:
    """(code, subcode, line index) of the last hold recorded in `lines`, or None.

    Recognises the job event log's held event (a "Code N Subcode M" line within
    a few lines after "Job was held.") and ClassAd attributes.
    """
    text = "\n".join(lines)
    if "Subcode" not in text and "HoldReasonCode" not in text:
        return None
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        match = _CODE_SUBCODE.search(line)
        if match is not None:
            window = lines[max(0, i - 6) : i]
            if any(_HELD_EVENT.match(w) or "Job was held" in w for w in window):
                return int(match.group(1)), int(match.group(2)), i
        match = _AD_CODE.search(line)
        if match is not None:
            subcode = None
            for j in range(max(0, i - 20), min(len(lines), i + 21)):
                sub = _AD_SUBCODE.search(lines[j])
                if sub is not None:
                    subcode = int(sub.group(1))
                    break
            return int(match.group(1)), subcode, i
    return None
