"""Shell exit statuses 126 and 127, and 128+N for a process killed by signal N.

Signal numbers are Linux's (x86-64 and ARM). Our own descriptions.
"""

from triage.kb import Action as A
from triage.kb import Category as C
from triage.kb import KbEntry, entry


def _u(code, symbol, category, transient, action, title, explanation=""):
    return entry("unix", code, symbol, category, transient, action, title, explanation)


_ROWS = [
    _u(
        126,
        "",
        C.CONFIG,
        False,
        "Check that the job's command is an executable file for this platform, with the "
        "execute bit set, and that it was shipped or built correctly.",
        "Command could not be executed",
        "The shell found the command but could not run it: it lacks execute permission, is "
        "a directory, or is not a valid program for this machine.",
    ),
    _u(
        127,
        "",
        C.CONFIG,
        False,
        "Check the command name and the environment setup (PATH, setup scripts, software "
        "area). If the same job works on other nodes, the node lacks the software area.",
        "Command not found",
        "The shell could not find the command: a typo, a PATH that the setup script did not "
        "extend, or a missing interpreter or dynamic loader.",
    ),
    _u(
        129,
        "SIGHUP",
        C.SITE,
        True,
        A.RETRY,
        "Killed by SIGHUP",
        "The job's session went away (its controlling terminal or parent ended), which the "
        "process took as a hang-up.",
    ),
    _u(
        130,
        "SIGINT",
        C.SITE,
        True,
        A.RETRY,
        "Interrupted (SIGINT)",
        "The job received an interrupt, as from Ctrl-C; batch systems send it when removing "
        "or preempting a job.",
    ),
    _u(
        131,
        "SIGQUIT",
        C.SITE,
        True,
        A.RETRY,
        "Quit signal (SIGQUIT)",
        "The job was told to quit and dump core, normally by the batch system or an operator.",
    ),
    _u(
        132,
        "SIGILL",
        C.SITE,
        True,
        "Retry on another node. If it follows the same CPU model, the software was built for "
        "newer CPU instructions than that node offers: restrict the jobs to suitable nodes.",
        "Illegal instruction (SIGILL)",
        "The CPU met an instruction it cannot execute: a damaged binary, or one built for an "
        "instruction set this node's CPU lacks.",
    ),
    _u(
        133,
        "SIGTRAP",
        C.SOFTWARE,
        False,
        A.FIX_SOFTWARE,
        "Trace/breakpoint trap (SIGTRAP)",
        "The program hit a debugging trap; usually a bug or a leftover breakpoint.",
    ),
    _u(
        134,
        "SIGABRT",
        C.SOFTWARE,
        False,
        A.FIX_SOFTWARE,
        "Aborted (SIGABRT)",
        "The program aborted itself: a failed assertion, an uncaught C++ exception, or the "
        "memory allocator detecting heap corruption.",
    ),
    _u(
        135,
        "SIGBUS",
        C.SITE,
        True,
        A.RETRY_ELSEWHERE,
        "Bus error (SIGBUS)",
        "A memory access could not be completed, typically on a memory-mapped file that was "
        "truncated or lives on a file system (CVMFS, NFS) that stopped responding.",
    ),
    _u(
        136,
        "SIGFPE",
        C.SOFTWARE,
        False,
        A.FIX_SOFTWARE,
        "Floating-point exception (SIGFPE)",
        "An arithmetic fault such as an integer division by zero.",
    ),
    _u(
        137,
        "SIGKILL",
        C.RESOURCE,
        False,
        "Compare peak memory and wall time with the request: raise whichever limit was hit. "
        "If neither was near its limit, the job was removed by an operator or preempted, "
        "and a retry should work.",
        "Killed (SIGKILL)",
        "The job was killed outright, most often by the batch system or the kernel's "
        "out-of-memory killer for exceeding its memory or time, sometimes by an operator.",
    ),
    _u(
        138,
        "SIGUSR1",
        C.SITE,
        True,
        A.RETRY,
        "User signal 1 (SIGUSR1)",
        "An application-defined signal; some batch systems send it as a warning shortly "
        "before killing a job.",
    ),
    _u(
        139,
        "SIGSEGV",
        C.SOFTWARE,
        False,
        A.FIX_SOFTWARE,
        "Segmentation fault (SIGSEGV)",
        "The program read or wrote memory it does not own: a software bug, or occasionally "
        "corrupt input that the code does not guard against.",
    ),
    _u(
        140,
        "SIGUSR2",
        C.SITE,
        True,
        A.RETRY,
        "User signal 2 (SIGUSR2)",
        "An application-defined signal, sent by some batch systems before a kill.",
    ),
    _u(
        141,
        "SIGPIPE",
        C.SOFTWARE,
        False,
        A.INVESTIGATE,
        "Broken pipe (SIGPIPE)",
        "The job wrote to a pipe or socket whose reader had gone, often because the process "
        "at the other end died first.",
    ),
    _u(
        142,
        "SIGALRM",
        C.RESOURCE,
        False,
        A.MORE_TIME,
        "Alarm clock (SIGALRM)",
        "A timer set by the job or its wrapper expired, usually a watchdog timeout.",
    ),
    _u(
        143,
        "SIGTERM",
        C.SITE,
        True,
        A.RETRY,
        "Terminated (SIGTERM)",
        "The job was asked to stop: removal, preemption, a node drain or shutdown, or a "
        "time limit reached with a grace period.",
    ),
    _u(
        144,
        "SIGSTKFLT",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Stack fault (SIGSTKFLT)",
        "A coprocessor stack fault; Linux does not raise it any more, so something sent it.",
    ),
    _u(
        145,
        "SIGCHLD",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Child status changed (SIGCHLD)",
        "Normally ignored; a process ending on it points to unusual signal handling.",
    ),
    _u(
        146,
        "SIGCONT",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Continue (SIGCONT)",
        "Normally resumes a stopped process; ending on it is unusual.",
    ),
    _u(
        147,
        "SIGSTOP",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Stopped (SIGSTOP)",
        "The process was stopped unconditionally and then reported as ended.",
    ),
    _u(
        148,
        "SIGTSTP",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Terminal stop (SIGTSTP)",
        "A stop request as from Ctrl-Z.",
    ),
    _u(
        149,
        "SIGTTIN",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Background read (SIGTTIN)",
        "A background process tried to read from a terminal.",
    ),
    _u(
        150,
        "SIGTTOU",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Background write (SIGTTOU)",
        "A background process tried to write to a terminal.",
    ),
    _u(
        151,
        "SIGURG",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Urgent socket data (SIGURG)",
        "Out-of-band data arrived on a socket; normally ignored.",
    ),
    _u(
        152,
        "SIGXCPU",
        C.RESOURCE,
        False,
        A.MORE_TIME,
        "CPU time limit exceeded (SIGXCPU)",
        "The job used more CPU time than its limit (RLIMIT_CPU) allows.",
    ),
    _u(
        153,
        "SIGXFSZ",
        C.RESOURCE,
        False,
        A.MORE_DISK,
        "File size limit exceeded (SIGXFSZ)",
        "The job tried to write a file larger than its limit (RLIMIT_FSIZE) allows.",
    ),
    _u(
        154,
        "SIGVTALRM",
        C.RESOURCE,
        False,
        A.MORE_TIME,
        "Virtual timer expired (SIGVTALRM)",
        "A user-CPU-time timer set by the job or its wrapper ran out.",
    ),
    _u(
        155,
        "SIGPROF",
        C.RESOURCE,
        False,
        A.MORE_TIME,
        "Profiling timer expired (SIGPROF)",
        "A profiling timer ran out; some wrappers use it as a CPU-time watchdog.",
    ),
    _u(
        156,
        "SIGWINCH",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "Window size change (SIGWINCH)",
        "A terminal resize notice, normally ignored.",
    ),
    _u(
        157,
        "SIGIO",
        C.UNKNOWN,
        False,
        A.INVESTIGATE,
        "I/O possible (SIGIO)",
        "Asynchronous I/O notice (also called SIGPOLL).",
    ),
    _u(
        158,
        "SIGPWR",
        C.SITE,
        True,
        A.RETRY_ELSEWHERE,
        "Power failure (SIGPWR)",
        "The node announced a power problem.",
    ),
    _u(
        159,
        "SIGSYS",
        C.SITE,
        False,
        "A container or security policy on the node blocks a system call the software "
        "needs; report it to the site or run in a different container image.",
        "Bad system call (SIGSYS)",
        "The program made a system call that is invalid or was blocked, e.g. by a container's "
        "seccomp filter.",
    ),
]

TABLE: dict[int, KbEntry] = {row.code: row for row in _ROWS}
