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

A second test looks at one error class alone: the node's most frequent
failure class against that class's rate at the same site and campaign, for a
class that is rare there (at most a quarter of the site's failure rate; a
full scratch disk, say). It proves a node that fails only half of its jobs,
but always the same way, much sooner than the overall rate can: at a site
failing 10 %, 7 failures in 16 attempts do not prove "worse than 30 %"
(P = 0.90), while 7 failures of a class the site almost never shows prove
"worse than 15 %" of that class (P = 0.998). The class test needs the same evidence (min_failures of
that class, flag_probability) and counts only together with the
class-concentration signature. For the site's usual failure class the rate
test alone decides.

Each sub-window is judged whole (proof and signature on the same attempts),
so a long window that proves more but dilutes the signature with the node's
healthy past does not hide a short one that shows both.

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
    # The one-class test: a class's site rate is shrunk towards class_prior_rate
    # with prior_weight pseudo-attempts, and the node's rate of that class must
    # be above k times it, at least class_min_rate. It applies only to a class
    # that is rare at the site (at most class_rare_share of the site's failure
    # rate): for the site's usual failure the rate test is the right one.
    class_prior_rate: float = 0.01
    class_min_rate: float = 0.15
    class_rare_share: float = 0.25

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
    class_failures: int = 0
    class_baseline_rate: float | None = None
    class_threshold_rate: float | None = None
    class_probability: float | None = None
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
    outcomes: Sequence[Outcome],
    baseline_of: Callable[[Outcome], float],
    config: Config,
    class_baseline_of: Callable[[Outcome, str], float] | None = None,
) -> Evidence:
    n = len(outcomes)
    f = sum(1 for o in outcomes if o.failed)
    base = sum(baseline_of(o) for o in outcomes) / n if n else config.prior_rate
    x = threshold_rate(base, config)
    ev = Evidence(
        window_attempts=n,
        window_failures=f,
        failure_rate=f / n if n else 0.0,
        baseline_rate=base,
        threshold_rate=x,
        probability=prob_rate_above(f, n, x),
    )
    if class_baseline_of is not None and f:
        top, count = Counter(
            o.error_class or "unclassified" for o in outcomes if o.failed
        ).most_common(1)[0]
        class_base = sum(class_baseline_of(o, top) for o in outcomes) / n
        ev.class_failures = count
        ev.class_baseline_rate = class_base
        if class_base <= config.class_rare_share * base:
            xc = min(max(config.k * class_base, config.class_min_rate), config.max_rate)
            ev.class_threshold_rate = xc
            ev.class_probability = prob_rate_above(count, n, xc)
    return ev


def _rate_proven(ev: Evidence, config: Config) -> bool:
    return ev.window_failures >= config.min_failures and ev.probability >= config.flag_probability


def _class_proven(ev: Evidence, config: Config) -> bool:
    """The one-class test, which counts only for a concentrated node."""
    return (
        ev.class_probability is not None
        and ev.class_failures >= config.min_failures
        and ev.class_probability >= config.flag_probability
        and ev.class_failures >= config.concentration * ev.window_failures
    )


def _describe(ev: Evidence, outcomes: Sequence[Outcome], config: Config) -> list[Outcome]:
    """Fill in the window's failure facts and signatures; returns its failures."""
    failures = [o for o in outcomes if o.failed]
    ev.fast_failures = sum(1 for o in failures if o.wall_s is not None and o.wall_s < config.fast_s)
    classes = Counter(o.error_class or "unclassified" for o in failures)
    ev.classes = dict(classes.most_common(5))
    if classes:
        ev.top_class, top_n = classes.most_common(1)[0]
        ev.top_class_share = top_n / len(failures)
    if failures:
        ev.first_bad_attempt_id = failures[0].attempt_id
        ev.first_bad_at = failures[0].ended_at
    ev.signatures = []
    if failures and ev.fast_failures / len(failures) >= config.fast_fraction:
        ev.signatures.append("fast-failure")
    if failures and ev.top_class_share >= config.concentration and ev.top_class:
        ev.signatures.append("class-concentration")
    return failures


def _rank(ev: Evidence, config: Config) -> tuple:
    # A window that proves the node bad *and* shows a signature wins (each
    # window is judged whole: a longer one may prove more but dilute the
    # signature with the node's healthy past), then proof alone; among equals
    # the one with more failures.
    proven = _rate_proven(ev, config) or _class_proven(ev, config)
    p = max(ev.probability, ev.class_probability or 0.0)
    return (
        proven and bool(ev.signatures),
        proven,
        min(p, config.flag_probability),
        ev.window_failures,
    )


def assess_node(
    recent: Sequence[Outcome],
    *,
    baselines: Mapping[tuple[str, object], float] | Callable[[str, object], float],
    class_baselines: Mapping[tuple[str, object, str], float]
    | Callable[[str, object, str], float]
    | None = None,
    previous: str = HEALTHY,
    config: Config = Config(),  # noqa: B008 - frozen, shared on purpose
) -> Assessment:
    """Judge a node on its recent outcomes (oldest first, already windowed).

    `class_baselines` gives a class's failure rate at (site, campaign, class);
    without it only the overall rate is tested.
    """
    recent = list(recent)[-config.window_n :]
    if callable(baselines):
        get = baselines

        def baseline_of(o: Outcome) -> float:
            return get(o.site, o.campaign)

    else:

        def baseline_of(o: Outcome) -> float:
            return baselines.get((o.site, o.campaign), config.prior_rate)

    class_baseline_of = None
    if callable(class_baselines):
        get_class = class_baselines

        def class_baseline_of(o: Outcome, cls: str) -> float:
            return get_class(o.site, o.campaign, cls)

    elif class_baselines is not None:

        def class_baseline_of(o: Outcome, cls: str) -> float:
            return class_baselines.get((o.site, o.campaign, cls), config.class_prior_rate)

    best: Evidence | None = None
    seen_lengths = set()
    for length in config.sub_windows:
        length = min(length, len(recent))
        if length in seen_lengths or length == 0:
            continue
        seen_lengths.add(length)
        tail = recent[-length:]
        ev = _window_evidence(tail, baseline_of, config, class_baseline_of)
        _describe(ev, tail, config)
        if best is None or _rank(ev, config) > _rank(best, config):
            best = ev
    if best is None:
        return Assessment(HEALTHY, Evidence(reason="no attempts in the window"))

    best.attempts = len(recent)
    best.failures = sum(1 for o in recent if o.failed)
    by_rate = _rate_proven(best, config)
    by_class = _class_proven(best, config)
    significant = by_rate or by_class

    rate_text = (
        f"{best.window_failures} of the last {best.window_attempts} attempts failed "
        f"({best.failure_rate:.0%} vs site baseline {best.baseline_rate:.1%}); "
        f"P(rate > {best.threshold_rate:.0%}) = {best.probability:.3f}"
    )
    if by_class and not by_rate:
        rate_text += (
            f"; {best.class_failures} were {best.top_class} "
            f"(site rate of that class {best.class_baseline_rate:.1%}), "
            f"P(class rate > {best.class_threshold_rate:.0%}) = {best.class_probability:.3f}"
        )
    if significant and best.signatures:
        state = BLACK_HOLE
        best.reason = rate_text + "; " + ", ".join(best.signatures)
    elif significant or (
        best.window_failures >= max(3, config.min_failures - 2)
        and best.probability >= config.suspect_probability
    ):
        state = SUSPECT
        best.reason = (
            rate_text
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
    """Outcomes of one (site, campaign) over a sliding window, counted per node
    and per failure class."""

    def __init__(self, config: Config):
        self.config = config
        self.items: deque[tuple[float, str, bool, str]] = deque()
        self.failures = 0
        self.per_node: dict[str, list[int]] = {}
        self.per_class: Counter[str] = Counter()
        self.per_node_class: dict[str, Counter[str]] = {}

    def add(self, at: float, node: str, failed: bool, error_class: str = "") -> None:
        cls = (error_class or "unclassified") if failed else ""
        self.items.append((at, node, failed, cls))
        self.failures += failed
        counts = self.per_node.setdefault(node, [0, 0])
        counts[0] += 1
        counts[1] += failed
        if cls:
            self.per_class[cls] += 1
            self.per_node_class.setdefault(node, Counter())[cls] += 1
        self.expire(at)

    def expire(self, now: float) -> None:
        cutoff = now - self.config.baseline_window_s
        while self.items and (
            self.items[0][0] < cutoff or len(self.items) > self.config.baseline_window_n
        ):
            _, node, failed, cls = self.items.popleft()
            self.failures -= failed
            counts = self.per_node[node]
            counts[0] -= 1
            counts[1] -= failed
            if cls:
                self.per_class[cls] -= 1
                self.per_node_class[node][cls] -= 1
            if counts[0] == 0:
                del self.per_node[node]
                self.per_node_class.pop(node, None)

    def rate_excluding(self, nodes: Iterable[str]) -> float:
        n, f = len(self.items), self.failures
        for node in nodes:
            counts = self.per_node.get(node)
            if counts:
                n -= counts[0]
                f -= counts[1]
        return shrunk_rate(f, n, self.config)

    def class_rate_excluding(self, error_class: str, nodes: Iterable[str]) -> float:
        n, f = len(self.items), self.per_class.get(error_class, 0)
        for node in nodes:
            counts = self.per_node.get(node)
            if counts:
                n -= counts[0]
                f -= self.per_node_class.get(node, Counter()).get(error_class, 0)
        return shrunk_class_rate(f, n, self.config)


def shrunk_class_rate(failures: int, attempts: int, config: Config) -> float:
    return (failures + config.class_prior_rate * config.prior_weight) / (
        attempts + config.prior_weight
    )


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

        cache: dict[tuple, float] = {}

        def cached(site: str, campaign: object) -> float:
            key = (site, campaign)
            if key not in cache:
                cache[key] = baseline(site, campaign)
            return cache[key]

        def class_cached(site: str, campaign: object, cls: str) -> float:
            key = (site, campaign, cls)
            if key not in cache:
                bw = self.baselines.get((site, campaign))
                cache[key] = (
                    bw.class_rate_excluding(cls, excluded) if bw else self.config.class_prior_rate
                )
            return cache[key]

        before = self.states.get(node, HEALTHY)
        result = assess_node(
            window,
            baselines=cached,
            class_baselines=class_cached,
            previous=before,
            config=self.config,
        )
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
        bw.add(outcome.ended_at, outcome.node, outcome.failed, outcome.error_class)
        return self._assess(outcome.node, outcome.ended_at)

    def sweep(self, now: float) -> list[Transition]:
        """Re-judge flagged and suspect nodes as time passes (old failures age out)."""
        out = []
        for node in [n for n, s in self.states.items() if s != HEALTHY]:
            t = self._assess(node, now)
            if t is not None:
                out.append(t)
        return out
