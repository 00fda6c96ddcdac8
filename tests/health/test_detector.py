"""The pure detector on constructed event streams (no database)."""

import math

import pytest

from triage.nodehealth.detector import (
    BLACK_HOLE,
    HEALTHY,
    SUSPECT,
    Config,
    Detector,
    Outcome,
    assess_node,
    assess_site,
    prob_rate_above,
)

MIN = 60.0
BASE = {("FNAL", "c1"): 0.05}


def stream(pattern: str, *, node="wn1", start=0.0, step=MIN, wall=3000.0, cls="exit:art:65"):
    """Outcomes from a string: '.' success, 'x' failure, 'f' fast failure."""
    out = []
    for i, ch in enumerate(pattern):
        failed = ch in "xf"
        out.append(
            Outcome(
                attempt_id=i + 1,
                node=node,
                site="FNAL",
                campaign="c1",
                ended_at=start + i * step,
                failed=failed,
                wall_s=30.0 if ch == "f" else wall,
                error_class=cls if failed else "",
            )
        )
    return out


def test_it_computes_the_beta_posterior_tail():
    # Beta(1,1) is uniform: P(rate > 0.3) = 0.7.
    assert prob_rate_above(0, 0, 0.3) == pytest.approx(0.7)
    # Beta(f+1, 1) after f failures in f attempts: P(rate > x) = 1 - x^(f+1).
    assert prob_rate_above(5, 5, 0.2) == pytest.approx(1 - 0.2**6)
    # Beta(1, n+1) after n successes: P(rate > x) = (1-x)^(n+1).
    assert prob_rate_above(0, 9, 0.2) == pytest.approx(0.8**10)
    assert not math.isnan(prob_rate_above(60, 64, 0.6))


def test_it_does_not_flag_on_too_little_evidence():
    # Four fast failures in a row: significant-looking, but below min_failures.
    result = assess_node(stream("." * 20 + "ffff"), baselines=BASE)
    assert result.state != BLACK_HOLE
    assert result.evidence.window_failures == 4


def test_it_flags_fast_failures_within_ten_failures_of_onset():
    det = Detector(Config())
    flagged_after = None
    failures = 0
    for o in stream("." * 30 + "f" * 12):
        failures += o.failed
        tr = det.observe(o)
        if tr and tr.after == BLACK_HOLE:
            flagged_after = failures
            break
    assert flagged_after is not None
    assert flagged_after <= 10
    ev = det.evidence["wn1"]
    assert "fast-failure" in ev.signatures
    assert ev.first_bad_attempt_id == 31  # the first failure after the healthy run
    assert ev.fast_failures >= 5


def test_it_flags_a_node_whose_failures_are_one_class():
    # Slow failures (full wall time) but all CVMFS: the concentration signature.
    result = assess_node(stream("." * 10 + "x" * 7, cls="rule:builtin:cvmfs"), baselines=BASE)
    assert result.state == BLACK_HOLE
    assert result.evidence.signatures == ["class-concentration"]
    assert result.evidence.top_class == "rule:builtin:cvmfs"
    assert result.evidence.classes == {"rule:builtin:cvmfs": 7}


def test_it_calls_a_node_suspect_without_a_signature():
    mixed = stream("." * 10 + "x" * 8)
    mixed = [
        Outcome(**{**o.__dict__, "error_class": f"class{i % 4}" if o.failed else ""})
        for i, o in enumerate(mixed)
    ]
    result = assess_node(mixed, baselines=BASE)
    assert result.state == SUSPECT
    assert result.evidence.signatures == []


def test_it_leaves_busy_and_slow_healthy_nodes_alone():
    # Busy: many attempts, failures at the site's own rate (about 1 in 20),
    # some of them quick; slow: three times the wall time, same failures.
    busy = stream(("." * 19 + "f") * 10, step=10.0)
    slow = stream(("." * 9 + "x") * 6, wall=9000.0, step=3 * MIN)
    for pattern in (busy, slow):
        det = Detector(Config())
        transitions = [t for t in map(det.observe, pattern) if t is not None]
        assert BLACK_HOLE not in {t.after for t in transitions}
        assert det.states.get("wn1", HEALTHY) == HEALTHY


def test_it_judges_against_the_site_baseline():
    # 8 failures in 16 is bad at a 2 % site, but not proof at a 30 % site.
    pattern = stream(".x" * 8, cls="rule:builtin:cvmfs")
    assert assess_node(pattern, baselines={("FNAL", "c1"): 0.02}).state == BLACK_HOLE
    assert assess_node(pattern, baselines={("FNAL", "c1"): 0.30}).state == HEALTHY


def test_it_clears_a_node_that_recovers():
    det = Detector(Config())
    outcomes = stream("." * 10 + "f" * 10 + "." * 8)
    seen = []
    for o in outcomes:
        tr = det.observe(o)
        if tr:
            seen.append((tr.before, tr.after, o.attempt_id))
    assert any(after == BLACK_HOLE for _, after, _ in seen)
    before, after, at = next(t for t in seen if t[0] == BLACK_HOLE)
    assert after != BLACK_HOLE
    assert at == 20 + Config().clear_successes  # cleared after 5 successes in a row
    # It starts afresh: the old spell cannot flag it again.
    assert [o.attempt_id for o in det.windows["wn1"]] == list(range(at + 1, 29))


def test_it_keeps_the_flag_while_the_node_still_fails():
    # On its own, 4 slow failures of assorted classes would not flag the node,
    # but a flagged node stays flagged until it recovers.
    recent = [
        Outcome(**{**o.__dict__, "error_class": f"class{o.attempt_id}" if o.failed else ""})
        for o in stream("x.x.x.x")
    ]
    assert assess_node(recent, baselines=BASE).state != BLACK_HOLE
    result = assess_node(recent, baselines=BASE, previous=BLACK_HOLE)
    assert result.state == BLACK_HOLE
    assert result.evidence.reason.startswith("still failing")


def test_it_clears_when_the_failures_age_out_of_the_window():
    det = Detector(Config())
    for o in stream("." * 5 + "f" * 8):
        det.observe(o)
    assert det.states["wn1"] == BLACK_HOLE
    transitions = det.sweep(now=13 * MIN + Config().window_s + 1)
    assert [(t.before, t.after) for t in transitions] == [(BLACK_HOLE, HEALTHY)]


def test_it_leaves_flagged_nodes_out_of_the_site_baseline():
    det = Detector(Config())
    for o in stream("f" * 40, node="bad1", step=1.0):
        det.observe(o)
    assert det.states["bad1"] == BLACK_HOLE
    # A second black hole at the same site is still measured against healthy nodes.
    for o in stream("." * 40, node="ok1", step=1.0):
        det.observe(o)
    for o in stream("." * 5 + "f" * 6, node="bad2", start=100.0, step=1.0):
        det.observe(o)
    assert det.states["bad2"] == BLACK_HOLE


def test_it_calls_a_whole_site_suspect_only_with_evidence():
    assert assess_site(failures=3, attempts=3, baseline_rate=0.05).state == HEALTHY
    assert assess_site(failures=40, attempts=100, baseline_rate=0.05).state == SUSPECT
    assert assess_site(failures=6, attempts=100, baseline_rate=0.05).state == HEALTHY


def half_stream(cls: str):
    """A node that fails every other job, always the same way, at a 10 % site."""
    return stream("." * 10 + ".x" * 8, cls=cls)


def test_it_proves_a_half_failing_node_by_its_rare_class():
    site = {("FNAL", "c1"): 0.10}
    # The rate test alone: 6 of the last 12-16 failing is no proof of "> 30 %".
    alone = assess_node(half_stream("rule:builtin:scratch-full"), baselines=site)
    assert alone.state != BLACK_HOLE
    # The site almost never sees a full scratch disk: the class test proves it.
    rare = {("FNAL", "c1", "rule:builtin:scratch-full"): 0.002}
    result = assess_node(
        half_stream("rule:builtin:scratch-full"), baselines=site, class_baselines=rare
    )
    assert result.state == BLACK_HOLE
    ev = result.evidence
    assert ev.class_probability >= 0.99
    assert ev.class_threshold_rate == pytest.approx(Config().class_min_rate)
    assert "rule:builtin:scratch-full" in ev.reason
    assert ev.signatures == ["class-concentration"]


def test_it_leaves_the_class_test_out_for_the_sites_usual_failure():
    # The same pattern, but the class is most of what fails at this site anyway.
    site = {("FNAL", "c1"): 0.10}
    usual = {("FNAL", "c1", "exit:art:65"): 0.08}
    result = assess_node(half_stream("exit:art:65"), baselines=site, class_baselines=usual)
    assert result.state != BLACK_HOLE
    assert result.evidence.class_probability is None


def test_it_needs_min_failures_of_the_class_too():
    site = {("FNAL", "c1"): 0.10}
    rare = {("FNAL", "c1", "rule:builtin:scratch-full"): 0.002}
    four = stream("." * 10 + ".x" * 4, cls="rule:builtin:scratch-full")
    result = assess_node(four, baselines=site, class_baselines=rare)
    assert result.state != BLACK_HOLE
    assert result.evidence.class_failures == 4


def test_it_judges_each_window_whole_so_old_noise_does_not_hide_a_signature():
    # Three stray failures of another class just before the onset; then a
    # stage-out black hole. The 16-attempt window has the most failures but
    # only 6 of 9 are stage-out; the 8-attempt one shows proof and signature.
    outcomes = stream("." * 20 + "x.x.x.", cls="signal:9") + stream(
        "xxxxxx", start=26 * MIN, cls="rule:builtin:stageout"
    )
    outcomes = [Outcome(**{**o.__dict__, "attempt_id": i + 1}) for i, o in enumerate(outcomes)]
    result = assess_node(outcomes, baselines=BASE)
    assert result.state == BLACK_HOLE
    assert result.evidence.window_attempts == 8
    assert "class-concentration" in result.evidence.signatures
