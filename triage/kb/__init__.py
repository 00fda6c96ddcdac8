"""prodmon's own knowledge base of exit codes, hold codes and log signatures.

Written in our own words from the facts in the upstream sources named in the
top-level NOTICE file. Nothing here reads those sources at run time.

Families
--------
Exit codes mean different things in different software, so each code is looked
up in an ordered list of *families*:

- ``unix``: 126, 127 and 128+N for a process killed by signal N (Linux numbering).
- ``art``: art::errors codes 1-33 and the art process exit codes 65-71, 88, 91.
- ``cmssw``: cmsRun's edm::errors codes 7000-9000.
- ``wmcore``: CMS job wrapper and agent codes (WMCore), 1-99999.
- ``panda``: PanDA pilot error codes 1008-1386.

HTCondor hold reason codes (with subcodes) are a separate table: a hold is
read from the log tail, not from the exit code (see ``htcondor.lookup_hold``).

Which families apply
--------------------
The list for an attempt comes from, first match wins: the experiment's list
for the stage's ``job_type`` (``TriageSettings.job_type_families``, matched by
prefix, case-insensitively), the experiment's own list
(``TriageSettings.code_families``), a built-in hint for the job type
(`JOB_TYPE_HINTS`: "cmsRun" -> cmssw, wmcore, unix; "art"/"lar" -> art, unix;
...), and finally `DEFAULT_FAMILIES` (art, unix). The first family in the
list that knows a code wins. Codes of 256 and above
that none of the chosen families knows are then looked up in every family, in
`ALL_FAMILIES` order: above 255 the families do not contradict each other
(cmssw and wmcore agree on 7000-9000). Codes below 256 are never looked up
outside the chosen families, because there they collide: 65 is "a cet::exception
escaped" for art but "end of job from the user application" for WMCore.

Experiments add codes of their own (``CustomExitCode`` rows, from the admin or
``manage.py triage_load_codes FILE.yaml --experiment X``); those win over
every built-in family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


class Category:
    SITE = "site"
    SOFTWARE = "software"
    INPUT = "input-data"
    RESOURCE = "resource-limit"
    CONFIG = "configuration"
    UNKNOWN = "unknown"

    CHOICES = (
        (SITE, "site / infrastructure"),
        (SOFTWARE, "software"),
        (INPUT, "input data"),
        (RESOURCE, "resource limit"),
        (CONFIG, "configuration"),
        (UNKNOWN, "unknown"),
    )
    VALUES = tuple(value for value, _ in CHOICES)


class Action:
    """Suggested actions, shared by many entries."""

    RETRY = "Retry. If the same node keeps failing this way, report the node to the site."
    RETRY_ELSEWHERE = (
        "Retry, preferably at another site or node. If many jobs at one site fail this "
        "way, open a ticket with that site, giving node names and times."
    )
    SITE_TICKET = (
        "Open a ticket with the site (node names, times, the log line). Retries at other "
        "sites are likely to succeed."
    )
    MORE_MEMORY = (
        "Compare the peak memory with the request. Resubmit with a larger memory request, "
        "or make the job smaller (fewer events or threads per job)."
    )
    MORE_DISK = (
        "Resubmit with a larger disk request, or write less to local disk (smaller output "
        "files, clean up temporary files)."
    )
    MORE_TIME = (
        "Compare the run time with the limit. Resubmit with a longer time limit, or split "
        "the work into shorter jobs."
    )
    FIX_CONFIG = (
        "Fix the job configuration (configuration file, command line, environment setup) "
        "and resubmit. A plain retry will fail the same way."
    )
    FIX_SOFTWARE = (
        "Report it to the software experts with the log excerpt and the release. A plain "
        "retry is unlikely to help."
    )
    CHECK_INPUT = (
        "Check the input file: does it exist, can it be read, does its checksum match the "
        "catalog? If it is corrupt, mark it bad and skip or regenerate it."
    )
    CHECK_STORAGE = (
        "Check that the storage endpoint is up and the file is staged. Retry; if it keeps "
        "failing for the same file or endpoint, open a ticket with the storage site."
    )
    CHECK_CREDENTIALS = (
        "Renew the credentials the jobs use (proxy, token, certificate), check their "
        "permissions on the target storage, and resubmit."
    )
    OPERATOR = (
        "The job was stopped on purpose (by a user, an operator or a policy). Resubmit if "
        "that was a mistake."
    )
    INVESTIGATE = (
        "Read the log excerpt. If the same failure repeats, give it a name and a rule, and "
        "ask the experts."
    )
    SUBMISSION = (
        "A problem of the submission or workflow system, not of the job itself. Check the "
        "agent or scheduler, then resubmit."
    )


HOLD_FAMILY = "htcondor-hold"


@dataclass(frozen=True)
class KbEntry:
    family: str
    code: int
    symbol: str
    title: str
    category: str
    transient: bool
    action: str
    explanation: str = ""
    subcode: int | None = None
    # A generic entry says little beyond "it failed" (an exception of some
    # kind escaped). Clustering the log gives a sharper class, so a generic
    # entry is only used when there is no error line to cluster.
    generic: bool = False

    @property
    def key(self) -> str:
        """The error-class key: "exit:art:65", "htcondor-hold:34", "htcondor-hold:34:102"."""
        if self.family == HOLD_FAMILY:
            suffix = "" if self.subcode is None else f":{self.subcode}"
            return f"{HOLD_FAMILY}:{self.code}{suffix}"
        return f"exit:{self.family}:{self.code}"

    def describe(self) -> str:
        return self.explanation or self.title


def entry(
    family: str,
    code: int,
    symbol: str,
    category: str,
    transient: bool,
    action: str,
    title: str,
    explanation: str = "",
    generic: bool = False,
) -> KbEntry:
    return KbEntry(
        family=family,
        code=code,
        symbol=symbol,
        title=title,
        category=category,
        transient=transient,
        action=action,
        explanation=explanation,
        generic=generic,
    )


def _tables() -> dict[str, dict[int, KbEntry]]:
    from triage.kb import art, cmssw, panda, unix, wmcore

    return {
        "unix": unix.TABLE,
        "art": art.TABLE,
        "cmssw": cmssw.TABLE,
        "wmcore": wmcore.TABLE,
        "panda": panda.TABLE,
    }


ALL_FAMILIES: tuple[str, ...] = ("art", "unix", "cmssw", "wmcore", "panda")
# FNAL-hosted experiments run art; the signal numbers apply to everyone.
DEFAULT_FAMILIES: tuple[str, ...] = ("art", "unix")
# Used when an experiment says nothing for a stage's job_type (matched
# case-insensitively against the start of the job_type).
JOB_TYPE_HINTS: dict[str, tuple[str, ...]] = {
    "art": ("art", "unix"),
    "lar": ("art", "unix"),
    "cmsrun": ("cmssw", "wmcore", "unix"),
    "cmssw": ("cmssw", "wmcore", "unix"),
    "cms": ("cmssw", "wmcore", "unix"),
    "crab": ("cmssw", "wmcore", "unix"),
    "panda": ("panda", "unix"),
    "athena": ("panda", "unix"),
    "shell": ("unix",),
    "script": ("unix",),
}


def families_for(
    *,
    job_type: str = "",
    code_families: list[str] | tuple[str, ...] | None = None,
    job_type_families: dict[str, list[str]] | None = None,
) -> tuple[str, ...]:
    """The ordered family list for a stage's job type under an experiment's settings.

    First match wins: the experiment's list for the job type, the experiment's
    own list, the built-in hint for the job type, the default.
    """
    job_type_l = (job_type or "").lower()

    def by_job_type(mapping) -> tuple[str, ...] | None:
        for prefix, families in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            if job_type_l and job_type_l.startswith(prefix.lower()):
                return tuple(f for f in families if f in ALL_FAMILIES)
        return None

    chosen = by_job_type(job_type_families or {})
    if chosen:
        return chosen
    if code_families:
        chosen = tuple(f for f in code_families if f in ALL_FAMILIES)
        if chosen:
            return chosen
    return by_job_type(JOB_TYPE_HINTS) or DEFAULT_FAMILIES


def lookup_exit_code(code: int, families: tuple[str, ...] = DEFAULT_FAMILIES) -> KbEntry | None:
    """The entry for an exit code under an ordered family list, or None."""
    tables = _tables()
    for family in families:
        found = _lookup_in(tables, family, code)
        if found is not None:
            return found
    if code >= 256 or code < 0:
        for family in ALL_FAMILIES:
            if family in families:
                continue
            found = _lookup_in(tables, family, code)
            if found is not None:
                return found
    return None


def _lookup_in(tables, family: str, code: int) -> KbEntry | None:
    found = tables[family].get(code)
    if found is not None:
        return found
    if family == "wmcore":
        from triage.kb import wmcore

        if 7000 <= code <= 9000:
            return tables["cmssw"].get(code) or wmcore.range_entry(code)
        return wmcore.range_entry(code)
    return None


def lookup_signal(signal: int) -> KbEntry | None:
    """The entry for a process killed by `signal` (reported as 128+N)."""
    from triage.kb import unix

    return unix.TABLE.get(128 + signal)


def lookup_symbol(family: str, symbol: str) -> KbEntry | None:
    """An entry by its symbolic name, e.g. ("cmssw", "FileReadError")."""
    for item in _tables()[family].values():
        if item.symbol == symbol:
            return item
    return None


def lookup_key(key: str) -> KbEntry | None:
    """The entry behind a class key such as "exit:art:65" or "htcondor-hold:34:102"."""
    parts = key.split(":")
    try:
        if parts[0] == "exit" and len(parts) == 3:
            family, code = parts[1], int(parts[2])
            if family not in ALL_FAMILIES:
                return None
            return _lookup_in(_tables(), family, code)
        if parts[0] == HOLD_FAMILY:
            from triage.kb import htcondor

            subcode = int(parts[2]) if len(parts) > 2 else None
            return htcondor.lookup_hold(int(parts[1]), subcode)
    except (ValueError, IndexError):
        return None
    return None


def all_entries() -> list[KbEntry]:
    from triage.kb import htcondor

    out = [e for table in _tables().values() for e in table.values()]
    out += list(htcondor.TABLE.values())
    return out


__all__ = [
    "ALL_FAMILIES",
    "DEFAULT_FAMILIES",
    "JOB_TYPE_HINTS",
    "Action",
    "Category",
    "KbEntry",
    "all_entries",
    "entry",
    "families_for",
    "lookup_exit_code",
    "lookup_key",
    "lookup_signal",
    "lookup_symbol",
    "replace",
]
