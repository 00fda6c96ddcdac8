"""A stand-in for an art job: prints a realistic log, writes its output file
and ends the way its scenario says (see plan.SCENARIOS).

Standalone on purpose: the demo loader runs it through prodmon-report as a
real process, so it imports nothing from Django or prodmon.

    python payload.py --stage reco --key gen_0004.root --output reco_0004.root \
        --scenario segfault --events 30 --pace 1.0 --seed 17
"""

import argparse
import datetime as dt
import os
import random
import resource
import signal
import sys
import time

RELEASE = "dunesw v10_01_00 -q e26:prof"
FCL = {"gen": "prodsingle_mu_dune10kt.fcl", "reco": "reco_dune10kt.fcl", "ana": "ana_dune10kt.fcl"}
MODULES = {
    "gen": ("generator", "SingleGen", "largeant", "LArG4"),
    "reco": ("pandora", "StandardPandora", "pmtrack", "PMAlgTrackMaker"),
    "ana": ("ana", "AnalysisTree", "calo", "Calorimetry"),
}


def out(line: str = "") -> None:
    print(line, flush=True)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%d-%b-%Y %H:%M:%S UTC")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def burn(seconds: float) -> None:
    """Use the CPU for a while, as reconstruction does."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += sum(i * i for i in range(500))


class Job:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.run, self.subrun = 1, args.seed % 97 + 1
        self.memory: list[bytearray] = []

    def header(self) -> None:
        a = self.args
        out(f"%MSG-i MF_INIT_OK:  Early {stamp()} JobSetup")
        out("Messagelogger initialization complete.")
        out("%MSG")
        out(f"Release {RELEASE}")
        out(f"Running lar -c {FCL[a.stage]} -s {a.key} -o {a.output} -n {a.events}")
        out(f"INFO: FHICL_FILE_PATH searched for {FCL[a.stage]}: found in $DUNESW_DIR/fcl")
        if a.stage != "gen":
            out(f"Opening input file root://fndca1.fnal.gov:1094//pnfs/fnal.gov/usr/dune/{a.key}")
        label, kind, label2, kind2 = MODULES[a.stage]
        out(f"%MSG-i ModuleConstruction:  {kind}:{label} {stamp()}")
        out(f"Constructed module {label} of type {kind} and {label2} of type {kind2}")
        out("%MSG")

    def events(self, last: int, memory_mb_per_event: int = 0) -> None:
        for i in range(1, last + 1):
            out(
                f"Begin processing the {ordinal(i)} record. "
                f"run: {self.run} subRun: {self.subrun} event: {i} at {stamp()}"
            )
            # Mostly CPU, a little I/O wait: a healthy job is ~80% efficient.
            burn(0.05 * self.args.pace)
            time.sleep(self.rng.uniform(0.005, 0.02) * self.args.pace)
            if memory_mb_per_event:
                self.memory.append(bytearray(memory_mb_per_event << 20))
                rss = 300 + len(self.memory) * memory_mb_per_event
                err(f"%MSG-w MemoryCheck:  {MODULES[self.args.stage][1]}:{i} {stamp()}")
                err(f"MemoryCheck: event : VSIZE {rss + 900}.1 0 RSS {rss}.4 {memory_mb_per_event}")
                err("%MSG")

    def write_output(self) -> None:
        size = self.rng.randint(40, 300) * 1024
        with open(self.args.output, "wb") as handle:
            handle.write(os.urandom(size))
        out(f"Closed output file {self.args.output!r} ({size} bytes)")

    def summary(self, events: int, status: int) -> None:
        cpu = time.process_time()
        out("TrigReport ---------- Event  Summary ------------")
        out(f"TrigReport Events total = {events} passed = {events} failed = 0")
        out("TimeReport ---------- Time  Summary ---[sec]----")
        out(f"TimeReport CPU = {cpu:.6f} Real = {cpu * 1.6:.6f}")
        out("MemReport  ---------- Memory  Summary ---[base-10 MB]----")
        out(f"MemReport  VmPeak = {1180 + self.rng.random() * 80:.3f} VmHWM = 412.5")
        out(f"Art has completed and will exit with status {status}.")

    def fatal(self, category: str, context: list[str], info: list[str]) -> None:
        err(f"----- Begin Fatal Exception {stamp()}-----------------------")
        err(f"An exception of category '{category}' occurred while")
        for n, line in enumerate(context):
            err(f"   [{n}] {line}")
        err("   Additional Info:")
        for letter, line in zip("abcdefgh", info, strict=False):
            err(f"      [{letter}] {line}")
        err("----- End Fatal Exception -------------------------------------------------")

    def crash_banner(self, what: str) -> None:
        err("")
        err(f" *** Break *** {what}")
        err("===========================================================")
        err("There was a crash.")
        err("This is the entire stack trace of all threads:")
        err("===========================================================")
        err("#0  0x00007f3a1c2e1b3c in waitpid () from /lib64/libc.so.6")
        err("#1  0x00007f3a1c25ea17 in do_system () from /lib64/libc.so.6")
        err("#2  0x00007f3a1d8f0f19 in TUnixSystem::StackTrace() () from libCore.so")
        label, kind = MODULES[self.args.stage][:2]
        err(f"#3  0x00007f3a0b11c2d0 in {kind}::produce(art::Event&) () from lib{kind}.so")
        err("===========================================================")


def die_by(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
    time.sleep(5)  # never reached: the signal ends the process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=sorted(FCL))
    parser.add_argument("--key", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--scenario", default="success")
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # No core files from the crash scenarios.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    job = Job(args)
    scenario, n = args.scenario, args.events

    job.header()
    if scenario == "config_error":
        job.fatal(
            "Configuration",
            ["Constructing the EventProcessor", f"Processing the FHiCL file {FCL[args.stage]}"],
            [
                f"Can't find key 'services.Geometry.GDML' in {FCL[args.stage]}",
                "Did you mean to #include 'geometry_dune.fcl'?",
            ],
        )
        out("Art has completed and will exit with status 65.")
        return 65
    if scenario == "file_open_error":
        err(f"%MSG-w XrdAdaptorInternal:  file_open {stamp()}")
        err("Failed to open file at URL root://fndca1.fnal.gov:1094//pnfs/fnal.gov/usr/dune/")
        err("%MSG")
        job.fatal(
            "FileOpenError",
            ["Constructing the EventProcessor", "Constructing input source of type RootInput"],
            [
                f"Input file root://fndca1.fnal.gov:1094//pnfs/fnal.gov/usr/dune/{args.key} "
                "could not be opened.",
                "Fatal Root Error: @SUB=TNetXNGFile::Open",
                "[ERROR] Server responded with an error: [3011] No servers are available "
                "to read the file.",
            ],
        )
        out("Art has completed and will exit with status 8020.")
        return 8020  # the exit status keeps the low 8 bits: 84
    if scenario == "file_read_error":
        job.events(n // 3)
        err(
            "Error in <TBasket::Streamer>: The value of fKeylen is incorrect (-27) ; "
            "trying to recover by setting it to zero"
        )
        err(
            f"Error in <TBranchElement::GetBasket>: File: {args.key} at byte:2314712, "
            "branch:recob::Hits_gaushit__Reco.obj, entry:12, badread=1"
        )
        job.fatal(
            "FileReadError",
            [
                f"Calling beginEvent for run {job.run} subRun {job.subrun}",
                "Reading branch recob::Hits_gaushit__Reco.obj",
            ],
            [f"Could not read a basket of {args.key}: the file is damaged or truncated"],
        )
        out("Art has completed and will exit with status 8021.")
        return 8021  # arrives as 85
    if scenario == "oom_kill":
        job.events(n // 2, memory_mb_per_event=8)
        out("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7340021.batch.")
        die_by(signal.SIGKILL)
    if scenario == "bad_alloc":
        job.events(n // 2, memory_mb_per_event=4)
        job.fatal(
            "StdException",
            [f"Calling produce for module {MODULES[args.stage][1]}/{MODULES[args.stage][0]}"],
            ["A std::exception was thrown.", "std::bad_alloc"],
        )
        err("terminate called after throwing an instance of 'std::bad_alloc'")
        err("  what():  std::bad_alloc")
        die_by(signal.SIGABRT)
    if scenario in ("segfault", "sigbus"):
        job.events(n // 2 + 1)
        job.crash_banner("segmentation violation" if scenario == "segfault" else "bus error")
        die_by(signal.SIGSEGV if scenario == "segfault" else signal.SIGBUS)

    job.events(n)
    job.write_output()
    job.summary(n, 0)
    if scenario == "stage_out_failure":
        dest = f"/pnfs/dune/scratch/users/dunepro/mc-2026-demo/{args.output}"
        out(f"ifdh cp {args.output} {dest}")
        for attempt in range(1, 4):
            err(
                "gfal-copy error: 70 (Communication error on send) - globus_ftp_client: "
                "the server responded with an error 451 Transfer was forcefully killed"
            )
            err(f"ifdh: copy attempt {attempt} of 3 failed; retrying in 1 s")
        err(f"ifdh cp: copy of {args.output} failed after 3 tries")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
