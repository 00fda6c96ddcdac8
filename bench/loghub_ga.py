"""Grouping accuracy (GA) of triage's template mining on Loghub systems.

    python -m bench.loghub_ga ../shared/data/loghub-2k/HDFS ../shared/data/loghub-2k/BGL ...

Each DIR holds `<X>_2k.log_structured.csv` with Content and EventId columns.
One configuration (triage.mining's) for every system, no per-system tuning.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench._common import machine
from triage.classify import FailureFacts, classify_failure, compile_user_rule
from triage.mining import ErrorTemplateMiner, describe_configuration

# Drain's published GA on Loghub (Zhu et al., ICSE-SEIP 2019).
DRAIN_PUBLISHED = {
    "HDFS": 0.998,
    "Hadoop": 0.948,
    "Spark": 0.920,
    "Zookeeper": 0.967,
    "BGL": 0.963,
    "HPC": 0.887,
    "Linux": 0.690,
    "OpenSSH": 0.788,
}


def grouping_accuracy(truth: list[str], predicted: list[object]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true template."""
    truth_sizes = Counter(truth)
    groups: dict[object, list[int]] = defaultdict(list)
    for i, group in enumerate(predicted):
        groups[group].append(i)
    correct = 0
    for members in groups.values():
        templates = {truth[i] for i in members}
        if len(templates) == 1 and truth_sizes[truth[members[0]]] == len(members):
            correct += len(members)
    return correct / len(truth) if truth else 0.0


def load_system(folder: Path) -> tuple[str, list[str], list[str]]:
    files = sorted(folder.glob("*_structured.csv"))
    if not files:
        raise SystemExit(f"{folder}: no *_structured.csv file")
    with files[0].open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    name = files[0].name.split("_")[0]
    return name, [r["Content"] for r in rows], [r["EventId"] for r in rows]


def cluster_lines(lines: list[str]) -> list[int]:
    miner = ErrorTemplateMiner()
    joined = [miner.add_line(line).cluster_id for line in lines]
    # Sibling merges may happen after a line joined: label lines by final class.
    return [miner.drain.class_id(cluster_id) for cluster_id in joined]


TAIL_LINES = 400
# Shifter-style rules, so the throughput includes user rules on a time budget.
SAMPLE_RULES = [
    r"Connection refused",
    r"No space left",
    r"\bOutOfMemoryError\b",
    r"authentication failure; .*user=root",
    r"Exception in thread \S+",
    r"cannot (?:open|read) \S+",
    r"\bFATAL\b.*\bdisk\b",
    r"timed? ?out after \d+",
    r"segfault at [0-9a-f]+",
    r"kernel: .*I/O error",
]


def classification_throughput(corpora: list[list[str]], seconds: float = 3.0) -> tuple[float, int]:
    """Failed-attempt tails per second through triage.classify.classify_failure.

    Each tail is TAIL_LINES consecutive log lines with exit code 1: the built-in
    signature rules and SAMPLE_RULES run over it, then (usually) the error line
    is picked and clustered. Returns (tails per second, tails classified).
    """
    rules = [
        compile_user_rule(rule_id=i, pattern=pattern, name=f"sample {i}")
        for i, pattern in enumerate(SAMPLE_RULES, start=1)
    ]
    tails = [
        lines[start : start + TAIL_LINES]
        for lines in corpora
        for start in range(0, max(len(lines) - TAIL_LINES, 1), TAIL_LINES // 2)
    ]
    facts = FailureFacts(exit_code=1, signal=None, reported_success=None)
    miner = ErrorTemplateMiner()
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        for tail in tails:
            classify_failure(lines=tail, facts=facts, rules=rules, cluster=miner.add_line)
            done += 1
    return done / (time.perf_counter() - started), done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)

    print(f"configuration: {describe_configuration()}")
    print(machine())
    results: dict[str, float] = {}
    corpora: list[list[str]] = []
    print(f"{'system':<10} {'lines':>6} {'GA':>6} {'Drain':>6} {'seconds':>8}")
    for folder in args.dirs:
        name, lines, truth = load_system(folder)
        corpora.append(lines)
        started = time.perf_counter()
        predicted = cluster_lines(lines)
        elapsed = time.perf_counter() - started
        results[name] = grouping_accuracy(truth, predicted)
        published = DRAIN_PUBLISHED.get(name)
        print(
            f"{name:<10} {len(lines):>6} {results[name]:>6.3f} "
            f"{published if published is not None else float('nan'):>6.3f} {elapsed:>8.2f}"
        )
    rate, count = classification_throughput(corpora)
    print(
        f"classification throughput: {rate:,.0f} failed-attempt tails/s "
        f"({count} tails of {TAIL_LINES} lines, exit code 1, {len(SAMPLE_RULES)} user rules "
        f"+ built-ins, clustering; one process, triage.classify.classify_failure)"
    )
    for name, value in results.items():
        print(f"{name} GA={value:.3f}")
    print(f"mean GA={sum(results.values()) / len(results):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
