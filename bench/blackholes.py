"""Replay a simulated campaign with injected black-hole nodes through the
node-health detector and score it.

    python -m bench.blackholes [--seed N] [--hours H]

A discrete-event simulation runs two campaigns over 10 sites of 20-25 worker
nodes each (4-8 slots per node). A healthy slot runs jobs of about an hour
(lognormal) and fails at its site's baseline rate (2-10 %), with a mix of
error classes, at a random point of the run. Injected at known times:

- fast black holes: jobs die within a couple of minutes, assorted classes;
- CVMFS black holes: jobs fail after 5-20 minutes, all with one class;
- stage-out black holes: jobs run their full length, then fail with one class;
- half black holes: half the jobs fail part-way, with one class (a full scratch);
- some black holes recover at a known time.

Decoys that must not be flagged: busy nodes (twice the slots, 1.5x the
baseline rate) and slow nodes (three times the wall time, 1.3x the rate).

Each end is fed, in end-time order, to triage.nodehealth.detector.Detector:
the very assess_node the portal runs after each attempt end, with a sweep
every 10 minutes. Once a node is flagged the simulated submitter excludes it
and sends only a probe job every 30 minutes per slot, so a recovered node can
be seen to recover.

A flag is a true positive when the node was bad at that moment (or recovered
less than two hours before: jobs started while it was bad still end failing).
"Failures before flag" counts the node's failures from onset to its first
flag. The last line:

    precision=<p> recall=<r> median_failures_to_flag=<n>
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from dataclasses import dataclass, field

from bench._common import machine
from triage.nodehealth.detector import BLACK_HOLE, Config, Detector, Outcome

HOUR = 3600.0
IN_FLIGHT = 2 * HOUR
HEALTHY_CLASSES = [
    ("exit:art:65", 30),
    ("exit:art:8001", 15),
    ("rule:builtin:xrootd", 15),
    ("rule:builtin:bad_alloc", 10),
    ("signal:9", 10),
    ("exit:unix:1", 10),
    ("cluster:7", 5),
    ("check:missing-output", 5),
]
BAD_KINDS = ("fast", "cvmfs", "stageout", "half")


@dataclass
class Node:
    name: str
    site: str
    slots: int
    base_rate: float
    duration_scale: float = 1.0
    kind: str = "healthy"  # healthy, busy, slow, fast, cvmfs, stageout
    onset: float | None = None
    recovery: float | None = None
    excluded: bool = False
    failures_since_onset: int = 0
    flags: list[tuple[float, bool, int]] = field(default_factory=list)  # (t, true, failures)
    cleared_after_recovery: float | None = None

    def flag_is_true(self, t: float) -> bool:
        # Jobs that started on the bad node still end (and fail) for a while
        # after it recovers: a flag within IN_FLIGHT of the recovery is earned.
        return self.bad_at(t) or (
            self.recovery is not None and self.recovery <= t < self.recovery + IN_FLIGHT
        )

    def bad_at(self, t: float) -> bool:
        return (
            self.onset is not None
            and t >= self.onset
            and (self.recovery is None or t < self.recovery)
        )


def build_nodes(rng: random.Random, n_bad: int, n_busy: int, n_slow: int, hours: float):
    nodes = []
    for s in range(10):
        site = f"SITE_{s:02d}"
        base = rng.uniform(0.02, 0.10)
        for i in range(rng.randint(20, 25)):
            nodes.append(Node(f"wn{i:03d}.site{s:02d}.org", site, rng.randint(4, 8), base))
    picks = rng.sample(nodes, n_bad + n_busy + n_slow)
    for node in picks[:n_bad]:
        node.kind = BAD_KINDS[len([n for n in nodes if n.kind in BAD_KINDS]) % len(BAD_KINDS)]
        node.onset = rng.uniform(0.1, 0.7) * hours * HOUR
        if rng.random() < 0.35:
            node.recovery = node.onset + rng.uniform(3, 8) * HOUR
    for node in picks[n_bad : n_bad + n_busy]:
        node.kind, node.slots, node.base_rate = "busy", node.slots * 2, node.base_rate * 1.5
    for node in picks[n_bad + n_busy :]:
        node.kind, node.duration_scale, node.base_rate = "slow", 3.0, node.base_rate * 1.3
    return nodes


def run_job(rng: random.Random, node: Node, t: float) -> tuple[float, bool, str]:
    """(wall_s, failed, error_class) of a job starting at t."""
    duration = rng.lognormvariate(8.1, 0.4) * node.duration_scale  # ~55 min median
    if node.bad_at(t):
        if node.kind == "fast" and rng.random() < 0.95:
            return (
                rng.uniform(10, 150),
                True,
                rng.choice(["exit:unix:127", "signal:11", "exit:art:90"]),
            )
        if node.kind == "cvmfs" and rng.random() < 0.9:
            return rng.uniform(300, 1200), True, "rule:builtin:cvmfs"
        if node.kind == "stageout" and rng.random() < 0.85:
            return duration, True, "rule:builtin:stageout"
        if node.kind == "half" and rng.random() < 0.5:
            return duration * rng.uniform(0.1, 0.5), True, "rule:builtin:scratch-full"
    if rng.random() < node.base_rate:
        cls = rng.choices([c for c, _ in HEALTHY_CLASSES], [w for _, w in HEALTHY_CLASSES])[0]
        return duration * rng.uniform(0.05, 1.0), True, cls
    return duration, False, ""


def simulate(seed: int, hours: float, config: Config) -> dict:
    rng = random.Random(seed)
    nodes = build_nodes(rng, n_bad=30, n_busy=12, n_slow=12, hours=hours)
    by_name = {n.name: n for n in nodes}
    detector = Detector(config)
    heap: list[tuple[float, int, str, float, bool, str, int]] = []
    seq = 0
    horizon = hours * HOUR

    def schedule(node: Node, start: float) -> None:
        nonlocal seq
        if node.excluded:
            start += 30 * 60  # a probe now and then, not a full slot's worth
        wall, failed, cls = run_job(rng, node, start)
        seq += 1
        campaign = "mc2025" if rng.random() < 0.6 else "reco2025"
        heapq.heappush(heap, (start + wall, seq, node.name, wall, failed, cls, hash(campaign)))

    for node in nodes:
        for _ in range(node.slots):
            schedule(node, rng.uniform(0, HOUR))

    attempts = 0
    next_sweep = 600.0
    started = time.perf_counter()

    def on_transition(tr) -> None:
        node = by_name[tr.node]
        if tr.after == BLACK_HOLE:
            node.excluded = True
            node.flags.append((tr.at, node.flag_is_true(tr.at), node.failures_since_onset))
        elif tr.before == BLACK_HOLE:
            node.excluded = False
            if node.recovery is not None and tr.at >= node.recovery:
                node.cleared_after_recovery = node.cleared_after_recovery or tr.at

    while heap:
        end, _, name, wall, failed, cls, campaign = heapq.heappop(heap)
        if end > horizon:
            break
        while next_sweep <= end:
            for tr in detector.sweep(next_sweep):
                on_transition(tr)
            next_sweep += 600.0
        node = by_name[name]
        attempts += 1
        if failed and node.bad_at(end):
            node.failures_since_onset += 1
        tr = detector.observe(
            Outcome(attempts, name, node.site, campaign, end, failed, wall, cls if failed else "")
        )
        if tr is not None:
            on_transition(tr)
        schedule(node, end)
    return {
        "nodes": nodes,
        "attempts": attempts,
        "seconds": time.perf_counter() - started,
    }


def score(nodes: list[Node]) -> dict:
    true_flags = sum(1 for n in nodes for _, ok, _ in n.flags if ok)
    false_flags = [(n, t) for n in nodes for t, ok, _ in n.flags if not ok]
    bad = [n for n in nodes if n.onset is not None]
    caught, to_flag = [], []
    for n in bad:
        first = next((f for f in n.flags if f[1]), None)
        if first is not None:
            caught.append(n)
            to_flag.append(first[2])
    precision = (
        true_flags / (true_flags + len(false_flags)) if true_flags + false_flags.__len__() else 1.0
    )
    recall = len(caught) / len(bad) if bad else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "to_flag": to_flag,
        "false_flags": false_flags,
        "bad": bad,
        "caught": caught,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=float, default=48.0)
    args = parser.parse_args()
    config = Config()

    print(machine())
    print(f"seed={args.seed} hours={args.hours}")
    print("detector config:", config.as_dict())
    result = simulate(args.seed, args.hours, config)
    nodes = result["nodes"]
    s = score(nodes)
    sites = len({n.site for n in nodes})
    print(
        f"simulated {result['attempts']} attempts on {len(nodes)} nodes at {sites} sites "
        f"in {result['seconds']:.1f} s ({result['attempts'] / result['seconds']:.0f} attempts/s)"
    )
    print(
        f"injected black holes: {len(s['bad'])} ({', '.join(BAD_KINDS)}); decoys: "
        f"{sum(n.kind == 'busy' for n in nodes)} busy, {sum(n.kind == 'slow' for n in nodes)} slow"
    )
    for n in sorted(s["bad"], key=lambda n: n.onset):
        first = next((f for f in n.flags if f[1]), None)
        rec = f", recovers at {n.recovery / HOUR:.1f} h" if n.recovery else ""
        cleared = (
            f", cleared at {n.cleared_after_recovery / HOUR:.1f} h"
            if n.cleared_after_recovery
            else (", NOT cleared" if n.recovery else "")
        )
        flagged = (
            f"flagged at {first[0] / HOUR:.2f} h after {first[2]} failures"
            if first
            else "NOT flagged"
        )
        print(f"  {n.name:24s} {n.kind:9s} onset {n.onset / HOUR:5.1f} h{rec}: {flagged}{cleared}")
    for n, t in s["false_flags"]:
        print(f"  false flag: {n.name} ({n.kind}) at {t / HOUR:.2f} h")
    decoys_flagged = sum(1 for n, _ in s["false_flags"] if n.kind in ("busy", "slow"))
    recovering = [n for n in s["bad"] if n.recovery and n in s["caught"]]
    cleared = sum(1 for n in recovering if n.cleared_after_recovery)
    print(f"decoys flagged: {decoys_flagged}; recovered nodes cleared: {cleared}/{len(recovering)}")
    to_flag = s["to_flag"]
    if to_flag:
        print(
            f"failures before flag: min {min(to_flag)} max {max(to_flag)} "
            f"within 10: {sum(1 for x in to_flag if x <= 10)}/{len(to_flag)}"
        )
    median = statistics.median(to_flag) if to_flag else float("nan")
    last = f"precision={s['precision']:.3f} recall={s['recall']:.3f} "
    print(last + f"median_failures_to_flag={median:g}")


if __name__ == "__main__":
    main()
