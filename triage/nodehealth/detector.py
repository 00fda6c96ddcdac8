"""The black-hole detector: pure functions over attempt outcomes, no ORM.

A node is judged on its recent ended attempts (a sliding window, by time and
count) against the baseline failure rate of the same site and campaign, with
the node itself and nodes already flagged left out of that baseline.

The statistical test is a beta-binomial posterior. With a uniform prior, the
node's failure rate after f failures in n attempts is Beta(f+1, n-f+1), and

    P(rate > x) = P(Binomial(n+1, x) <= f)

which needs no special functions. x is k times the baseline, kept between
`min_rate` and `max_rate` (BigPanDA's "HighFailed": 5x the site average, or
20 %). The test is run on several suffixes of the window (the last 8, 16, 32,
64 attempts) so that a node that just turned bad is not diluted by its own
healthy past, and the most telling suffix is kept as the evidence.

Significance alone makes a node *suspect*. A *black hole* also needs at least
`min_failures` failures and one of two signatures:

- fast failure: most failures end within `fast_s` of their start (glideinWMS
  retires a glidein whose jobs finish too fast);
- concentration: most failures are one error class (a broken CVMFS mount).

A black hole is cleared when the node recovers: `clear_successes` successes in
a row, or the evidence fading below `clear_probability` (old failures leave
the window with time).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

HEALTHY = "healthy"
SUSPECT = "suspect"
BLACK_HOLE = "black_hole"
STATES = (HEALTHY, SUSPECT, BLACK_HOLE)


@dataclass(frozen=True)
class Config:
    window_s: float = 6 * 3600.0
    window_n: int = 64
    sub_windows: tuple[int, ...] = (8, 16, 32, 64)
    min_failures: int = 5
    k: float = 3.0
    min_rate: float = 0.2
    max_rate: float = 0.6
    flag_probability: float = 0.99
    suspect_probability: float = 0.95
    clear_probability: float = 0.5
    fast_s: float = 300.0
    fast_fraction: float = 0.6
    concentration: float = 0.75
    clear_successes: int = 5
    # The baseline is shrunk towards this rate with this many pseudo-attempts,
    # so that a site with few attempts yet has a sane baseline.
    prior_rate: float = 0.05
    prior_weight: float = 20.0
    baseline_window_s: float = 24 * 3600.0
    baseline_window_n: int = 5000

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """One ended attempt as the detector sees it. Times are epoch seconds."""

    attempt_id: int
    node: str
    site: str
    campaign: object
    ended_at: float
    failed: bool
    wall_s: float | None = None
    error_class: str = ""


@dataclass
class Evidence:
    attempts: int = 0
    failures: int = 0
    failure_rate: float = 0.0
    baseline_rate: float = 0.0
    threshold_rate: float = 0.0
    probability: float = 0.0
    window_attempts: int = 0
    window_failures: int = 0
    fast_failures: int = 0
    top_class: str = ""
    top_class_share: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    first_bad_attempt_id: int | None = None
    first_bad_at: float | None = None
    signatures: list[str] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Assessment:
    state: str
    evidence: Evidence


def prob_rate_above(failures: int, attempts: int, x: float) -> float:
    """P(rate > x) under the Beta(f+1, n-f+1) posterior: P(Binomial(n+1, x) <= f)."""
    if attempts <= 0:
        return 1.0 - x
    if x <= 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    m = attempts + 1
    log_x, log_1x = math.log(x), math.log1p(-x)
    total = 0.0
    log_c = m * log_1x  # log C(m,0) x^0 (1-x)^m
    for i in range(failures + 1):
        if i:
            log_c += math.log(m - i + 1) - math.log(i) + log_x - log_1x
        total += math.exp(log_c)
    return min(total, 1.0)


def threshold_rate(baseline: float, config: Config) -> float:
    return min(max(config.k * baseline, config.min_rate), config.max_rate)


def _trailing_successes(outcomes: Sequence[Outcome]) -> int:
    run = 0
    for o in reversed(outcomes):
        if o.failed:
            break
        run += 1
    return run


def _window_evidence(
    outcomes: Sequence[Outcome], baseline_of: Callable[[Outcome], float], config: Config
) -> Evidence:
    n = len(outcomes)
    f = sum(1 for o in outcomes if o.failed)
    base = sum(baseline_of(o) for o in outcomes) / n if n else config.prior_rate
    x = threshold_rate(base, config)
    return Evidence(
        window_attempts=n,
        window_failures=f,
        failure_rate=f / n if n else 0.0,
        baseline_rate=base,
        threshold_rate=x,
        probability=prob_rate_above(f, n, x),
    )


def assess_node(
    recent: Sequence[Outcome],
    *,
    baselines: Mapping[tuple[str, object], float] | Callable[[str, object], float],
    previous: str = HEALTHY,
    config: Config = Config(),  # noqa: B008 - frozen, shared on purpose
) -> Assessment:
    """Judge a node on its recent outcomes (oldest first, already windowed)."""
    recent = list(recent)[-config.window_n :]
    if callable(baselines):
        get = baselines

        def baseline_of(o: Outcome) -> float:
            return get(o.site, o.campaign)

    else:

        def baseline_of(o: Outcome) -> float:
            return baselines.get((o.site, o.campaign), config.prior_rate)

    best: Evidence | None = None
    best_outcomes: Sequence[Outcome] = ()
    seen_lengths = set()
    for length in config.sub_windows:
        length = min(length, len(recent))
        if length in seen_lengths or length == 0:
            continue
        seen_lengths.add(length)
        tail = recent[-length:]
        ev = _window_evidence(tail, baseline_of, config)
        # Significance first; among windows that prove it, the one with more failures.
        key = (
            ev.window_failures >= config.min_failures and ev.probability >= config.flag_probability,
            ev.probability if ev.probability < config.flag_probability else 1.0,
            ev.window_failures,
        )
        best_key = (
            (
                best.window_failures >= config.min_failures
                and best.probability >= config.flag_probability,
                best.probability if best.probability < config.flag_probability else 1.0,
                best.window_failures,
            )
            if best
            else None
        )
        if best is None or key > best_key:
            best, best_outcomes = ev, tail
    if best is None:
        return Assessment(HEALTHY, Evidence(reason="no attempts in the window"))

    failures = [o for o in best_outcomes if o.failed]
    best.attempts = len(recent)
    best.failures = sum(1 for o in recent if o.failed)
    best.fast_failures = sum(
        1 for o in failures if o.wall_s is not None and o.wall_s < config.fast_s
    )
    classes = Counter(o.error_class or "unclassified" for o in failures)
    best.classes = dict(classes.most_common(5))
    if classes:
        best.top_class, top_n = classes.most_common(1)[0]
        best.top_class_share = top_n / len(failures)
    if failures:
        best.first_bad_attempt_id = failures[0].attempt_id
        best.first_bad_at = failures[0].ended_at

    enough = best.window_failures >= config.min_failures
    significant = enough and best.probability >= config.flag_probability
    if failures and best.fast_failures / len(failures) >= config.fast_fraction:
        best.signatures.append("fast-failure")
    if failures and best.top_class_share >= config.concentration and best.top_class:
        best.signatures.append("class-concentration")

    if significant and best.signatures:
        state = BLACK_HOLE
        best.reason = (
            f"{best.window_failures} of the last {best.window_attempts} attempts failed "
            f"({best.failure_rate:.0%} vs site baseline {best.baseline_rate:.1%}); "
            f"P(rate > {best.threshold_rate:.0%}) = {best.probability:.3f}; "
            + ", ".join(best.signatures)
        )
    elif significant or (
        best.window_failures >= max(3, config.min_failures - 2)
        and best.probability >= config.suspect_probability
    ):
        state = SUSPECT
        best.reason = (
            f"{best.window_failures} of the last {best.window_attempts} attempts failed "
            f"({best.failure_rate:.0%} vs site baseline {best.baseline_rate:.1%}); "
            f"P(rate > {best.threshold_rate:.0%}) = {best.probability:.3f}"
            + ("" if significant else "; not enough evidence yet")
            + ("" if best.signatures else "; no black-hole signature")
        )
    else:
        state = HEALTHY
        best.reason = "failure rate in line with the site"

    if state == BLACK_HOLE and _trailing_successes(recent) >= config.clear_successes:
        # Whatever the window says, a node that now runs jobs fine is no black hole.
        state = SUSPECT
        best.reason = "recovered: the last attempts succeeded; " + best.reason
    elif previous == BLACK_HOLE and state != BLACK_HOLE:
        # Judged on the shortest window: the long ones remember the bad spell.
        latest = _window_evidence(recent[-config.sub_windows[0] :], baseline_of, config)
        recovered = (
            _trailing_successes(recent) >= config.clear_successes
            or latest.probability < config.clear_probability
        )
        if not recovered:
            state = BLACK_HOLE
            best.reason = "still failing: " + best.reason
        else:
            best.reason = "recovered: " + best.reason
    return Assessment(state, best)


def assess_site(
    *,
    failures: int,
    attempts: int,
    baseline_rate: float,
    config: Config = Config(),  # noqa: B008
) -> Assessment:
    """A whole site against its campaigns' rate elsewhere: healthy or suspect only
    (sites are never exported as exclusions)."""
    x = threshold_rate(baseline_rate, config)
    p = prob_rate_above(failures, attempts, x)
    ev = Evidence(
        attempts=attempts,
        failures=failures,
        window_attempts=attempts,
        window_failures=failures,
        failure_rate=failures / attempts if attempts else 0.0,
        baseline_rate=baseline_rate,
        threshold_rate=x,
        probability=p,
    )
    if failures >= config.min_failures and p >= config.flag_probability:
        ev.reason = f"site fails {ev.failure_rate:.0%} vs {baseline_rate:.1%} elsewhere"
        return Assessment(SUSPECT, ev)
    ev.reason = "in line with the other sites"
    return Assessment(HEALTHY, ev)


def shrunk_rate(failures: int, attempts: int, config: Config) -> float:
    return (failures + config.prior_rate * config.prior_weight) / (attempts + config.prior_weight)


# --- an in-memory detector fed event by event (bench, tests) ------------------------


class BaselineWindow:
    """Outcomes of one (site, campaign) over a sliding window, counted per node."""

    def __init__(self, config: Config):
        self.config = config
        self.items: deque[tuple[float, str, bool]] = deque()
        self.failures = 0
        self.per_node: dict[str, list[int]] = {}

    def add(self, at: float, node: str, failed: bool) -> None:
        self.items.append((at, node, failed))
        self.failures += failed
        counts = self.per_node.setdefault(node, [0, 0])
        counts[0] += 1
        counts[1] += failed
        self.expire(at)

    def expire(self, now: float) -> None:
        cutoff = now - self.config.baseline_window_s
        while self.items and (
            self.items[0][0] < cutoff or len(self.items) > self.config.baseline_window_n
        ):
            _, node, failed = self.items.popleft()
            self.failures -= failed
            counts = self.per_node[node]
            counts[0] -= 1
            counts[1] -= failed
            if counts[0] == 0:
                del self.per_node[node]

    def rate_excluding(self, nodes: Iterable[str]) -> float:
        n, f = len(self.items), self.failures
        for node in nodes:
            counts = self.per_node.get(node)
            if counts:
                n -= counts[0]
                f -= counts[1]
        return shrunk_rate(f, n, self.config)


@dataclass(frozen=True)
class Transition:
    node: str
    at: float
    before: str
    after: str
    evidence: Evidence


class Detector:
    """Keeps the windows in memory and calls assess_node after each outcome."""

    def __init__(self, config: Config = Config()):  # noqa: B008
        self.config = config
        self.windows: dict[str, deque[Outcome]] = {}
        self.states: dict[str, str] = {}
        self.evidence: dict[str, Evidence] = {}
        self.baselines: dict[tuple[str, object], BaselineWindow] = {}

    def _flagged(self) -> set[str]:
        return {n for n, s in self.states.items() if s == BLACK_HOLE}

    def _assess(self, node: str, now: float) -> Transition | None:
        window = self.windows.get(node, deque())
        cutoff = now - self.config.window_s
        while window and window[0].ended_at < cutoff:
            window.popleft()
        excluded = self._flagged() | {node}

        def baseline(site: str, campaign: object) -> float:
            bw = self.baselines.get((site, campaign))
            return bw.rate_excluding(excluded) if bw else self.config.prior_rate

        cache: dict[tuple[str, object], float] = {}

        def cached(site: str, campaign: object) -> float:
            key = (site, campaign)
            if key not in cache:
                cache[key] = baseline(site, campaign)
            return cache[key]

        before = self.states.get(node, HEALTHY)
        result = assess_node(window, baselines=cached, previous=before, config=self.config)
        self.evidence[node] = result.evidence
        if result.state != before:
            self.states[node] = result.state
            if before == BLACK_HOLE:
                # A cleared node starts afresh: the old spell must not flag it again.
                window.clear()
            return Transition(node, now, before, result.state, result.evidence)
        return None

    def observe(self, outcome: Outcome) -> Transition | None:
        window = self.windows.setdefault(outcome.node, deque(maxlen=self.config.window_n))
        window.append(outcome)
        key = (outcome.site, outcome.campaign)
        bw = self.baselines.get(key)
        if bw is None:
            bw = self.baselines[key] = BaselineWindow(self.config)
        bw.add(outcome.ended_at, outcome.node, outcome.failed)
        return self._assess(outcome.node, outcome.ended_at)

    def sweep(self, now: float) -> list[Transition]:
        """Re-judge flagged and suspect nodes as time passes (old failures age out)."""
        out = []
        for node in [n for n, s in self.states.items() if s != HEALTHY]:
            t = self._assess(node, now)
            if t is not None:
                out.append(t)
        return out
