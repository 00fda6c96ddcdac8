"""Built-in signature rules: regexes over the log tail that name a failure
more precisely than an exit code can.

Every rule has a priority; a shifter's rule defaults to 100 and so beats all
of these. Among the built-ins, causes outrank symptoms: a stale CVMFS mount
(90) explains the bus error (50) it produces, and a failed copy (80) explains
the "file could not be opened" exception (40) that follows.

Some rules *resolve* to a knowledge-base entry instead of a class of their
own: "Art has completed and will exit with status 68" is art's exit code 68,
and a cmsRun fatal exception of category 'FileReadError' is CMSSW's 8021.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from triage.kb import Action as A
from triage.kb import Category as C


@dataclass(frozen=True)
class BuiltinRule:
    slug: str
    name: str
    pattern: str
    priority: int
    category: str
    transient: bool
    action: str
    explanation: str
    # Lower-case texts of which a matching tail must contain at least one: a
    # cheap test that skips the regex for most tails.
    hints: tuple[str, ...] = ()
    # A resolver turns the match into a knowledge-base entry (see triage.classify).
    resolver: str = ""
    flags: int = 0

    @property
    def key(self) -> str:
        return f"rule:builtin:{self.slug}"

    def compile(self) -> re.Pattern:
        return re.compile(self.pattern, self.flags)


BUILTIN_RULES: tuple[BuiltinRule, ...] = (
    BuiltinRule(
        slug="cvmfs",
        hints=("cvmfs",),
        name="CVMFS not mounted or stale",
        pattern=(
            r"/cvmfs/\S*.*\b(?:no such file or directory|transport endpoint is not connected|"
            r"input/output error|stale file handle|software caused connection abort)"
            r"|\bcvmfs\S*\b.*\b(?:not mounted|not available|not accessible|failed to mount|"
            r"mount(?:ing)? failed|is stale|stale|out of date|outdated|not responding|"
            r"unable to (?:mount|access|load))"
            r"|\b(?:stale file handle|transport endpoint is not connected)\b.*/cvmfs/"
        ),
        flags=re.IGNORECASE,
        priority=90,
        category=C.SITE,
        transient=True,
        action=(
            "Retry on another node. Report the node (and the CVMFS repository named in "
            "the line) to the site; many nodes of one site at once point to the site's "
            "CVMFS proxies."
        ),
        explanation=(
            "The CVMFS software area was missing, unreachable or serving an outdated "
            "revision on the worker node, so the job could not load its software or "
            "configuration."
        ),
    ),
    BuiltinRule(
        slug="container",
        hints=("mount", "loop device", "namespace", "singularity", "apptainer"),
        name="Container runtime failed",
        pattern=(
            r"Failed to mount image|No more available loop devices|Not mounting requested "
            r"bind point|Failed to create user namespace|error: while mounting|"
            r"(?:Singularity|Apptainer) is not installed|"
            r"\b(?:singularity|apptainer)\b.*\bFATAL\b"
        ),
        flags=re.IGNORECASE,
        priority=85,
        category=C.SITE,
        transient=True,
        action=A.RETRY_ELSEWHERE,
        explanation=(
            "Singularity/Apptainer could not start the job's container on the node (image "
            "mount, loop devices, bind points or user namespaces)."
        ),
    ),
    BuiltinRule(
        slug="copy-failed",
        hints=("ifdh", "xrdcp", "xrdcl", "[error]", "[fatal]"),
        name="File copy failed (ifdh / XRootD)",
        pattern=(
            r"\bifdh\b.*\b(?:cp|copy|fetch|copyBackOutput|addOutputFile)\b.*"
            r"\b(?:fail(?:ed|ure)?|error|exited (?:with )?status [1-9]\d*)"
            r"|\bifdh\b.*\b(?:fail(?:ed|ure)?|error)\b.*\bcop(?:y|ying)\b"
            r"|\bxrdcp\b.*\b(?:error|fail(?:ed)?)\b"
            r"|\[(?:ERROR|FATAL)\] (?:Server responded with an error|Operation expired|"
            r"Socket error|Connection refused|Auth failed|Redirect limit|Connection error)"
            r"|\bXrdCl\b.*\b(?:error|fail(?:ed)?)\b"
        ),
        flags=re.IGNORECASE,
        priority=80,
        category=C.SITE,
        transient=True,
        action=A.CHECK_STORAGE,
        explanation=(
            "Copying a file in or out with ifdh or XRootD failed: the storage endpoint, the "
            "network or the credentials let the transfer down."
        ),
    ),
    BuiltinRule(
        slug="no-space",
        hints=("no space left", "quota exceeded"),
        name="No space left on device",
        pattern=r"\bno space left on device\b|\bdisk quota exceeded\b",
        flags=re.IGNORECASE,
        priority=78,
        category=C.RESOURCE,
        transient=True,
        action=A.MORE_DISK,
        explanation="A disk the job writes to (scratch or storage) was full or over quota.",
    ),
    BuiltinRule(
        slug="oom-killer",
        hints=("memory", "oom"),
        name="Killed by the out-of-memory killer",
        pattern=(
            r"\bout of memory: kill(?:ed)? process\b|\boom[- _]?kill(?:er|ed)?\b|"
            r"\bmemory cgroup out of memory\b|\bexceeded (?:its )?memory limit\b"
        ),
        flags=re.IGNORECASE,
        priority=76,
        category=C.RESOURCE,
        transient=False,
        action=A.MORE_MEMORY,
        explanation="The kernel or the batch system killed the job for using too much memory.",
    ),
    BuiltinRule(
        slug="credentials",
        hints=("proxy", "certificate", "x509", "voms", "token"),
        name="Credentials expired or invalid",
        pattern=(
            r"\b(?:proxy|certificate|x509|voms|bearer token|token)\b.*"
            r"\b(?:has expired|expired|is not valid|not yet valid|invalid)\b"
        ),
        flags=re.IGNORECASE,
        priority=75,
        category=C.CONFIG,
        transient=False,
        action=A.CHECK_CREDENTIALS,
        explanation=(
            "The proxy, certificate or token the job authenticates with was expired or invalid."
        ),
    ),
    BuiltinRule(
        slug="bad-alloc",
        hints=("bad_alloc",),
        name="Out of memory (std::bad_alloc)",
        pattern=r"std::bad_alloc|\bbad_alloc\b",
        priority=70,
        category=C.RESOURCE,
        transient=False,
        action=A.MORE_MEMORY,
        explanation=(
            "A C++ memory allocation failed: the job reached the memory it is allowed to use "
            "(or the node ran out)."
        ),
    ),
    BuiltinRule(
        slug="fatal-root-error",
        hints=("fatalrooterror", "fatal root error"),
        name="Fatal ROOT error",
        # Not the "---- FatalRootError BEGIN/END" markers: the line inside says more.
        pattern=r"^(?!\s*-{4} \w+ (?:BEGIN|END)\s*$).*(?:\bFatalRootError\b|Fatal Root Error)",
        priority=60,
        category=C.INPUT,
        transient=False,
        action=A.CHECK_INPUT,
        explanation=(
            "ROOT could not read a file it must read: usually a damaged, truncated or "
            "unreachable input file."
        ),
    ),
    BuiltinRule(
        slug="bus-error",
        hints=("bus error", "sigbus"),
        name="Bus error",
        pattern=r"\bBus error\b|\bSIGBUS\b",
        priority=50,
        category=C.SITE,
        transient=True,
        action=A.RETRY_ELSEWHERE,
        explanation=(
            "A memory access failed, typically on a memory-mapped file whose file system "
            "(CVMFS, NFS) went away or on failing hardware."
        ),
    ),
    BuiltinRule(
        slug="segfault",
        hints=("segmentation", "sigsegv"),
        name="Segmentation fault",
        pattern=r"\bsegmentation (?:fault|violation)\b|\bSIGSEGV\b",
        flags=re.IGNORECASE,
        priority=45,
        category=C.SOFTWARE,
        transient=False,
        action=A.FIX_SOFTWARE,
        explanation="The program crashed on an invalid memory access.",
    ),
    BuiltinRule(
        slug="cmsrun-fatal-exception",
        hints=("begin fatal exception",),
        name="cmsRun fatal exception",
        pattern=r"^-{4,5} ?Begin Fatal Exception",
        priority=40,
        category=C.SOFTWARE,
        transient=False,
        action=A.INVESTIGATE,
        explanation="cmsRun stopped on an exception; its category names the cause.",
        resolver="cmssw_category",
    ),
    BuiltinRule(
        slug="art-exception",
        hints=(" begin",),
        name="art exception",
        pattern=r"^\s*-{4} (\w+) BEGIN\s*$",
        priority=35,
        category=C.SOFTWARE,
        transient=False,
        action=A.INVESTIGATE,
        explanation="art stopped on an exception; its category names the cause.",
        resolver="art_category",
    ),
    BuiltinRule(
        slug="art-exit-status",
        hints=("art has completed",),
        name="art exit status",
        pattern=r"Art has completed and will exit with status (\d+)",
        priority=30,
        category=C.SOFTWARE,
        transient=False,
        action=A.INVESTIGATE,
        explanation="art finished with a non-zero status.",
        resolver="art_status",
    ),
)

BUILTIN_BY_SLUG = {rule.slug: rule for rule in BUILTIN_RULES}
