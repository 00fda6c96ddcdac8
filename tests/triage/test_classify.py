"""The classification core: rules beat exit codes, precedence among rules,
built-in signatures, resolvers, and the choice of the error line."""

import re

import pytest

from triage import errorlines
from triage.classify import CompiledRule, FailureFacts, Source, classify_failure, rule_sort_key
from triage.kb import Category
from triage.mining import ErrorTemplateMiner

FACTS_1 = FailureFacts(exit_code=1, signal=None, reported_success=None)


def user_rule(rule_id, pattern, priority=100, **scope):
    return CompiledRule(
        key=f"rule:{rule_id}",
        regex=re.compile(pattern),
        priority=priority,
        name=f"rule {rule_id}",
        rule_id=rule_id,
        job_types=tuple(scope.get("job_types", ())),
        exit_codes=frozenset(scope.get("exit_codes", ())),
    )


def test_it_lets_a_rule_beat_the_exit_code():
    facts = FailureFacts(exit_code=137, signal=None, reported_success=None)
    lines = ["start", "GeometryService: cannot reach the conditions DB"]
    plain = classify_failure(lines=lines, facts=facts)
    assert plain.key == "exit:unix:137"
    ruled = classify_failure(lines=lines, facts=facts, rules=[user_rule(7, r"conditions DB")])
    assert (ruled.key, ruled.source) == ("rule:7", Source.RULE)
    assert ruled.line_index == 1
    assert lines[1][slice(*ruled.span)] == "conditions DB"


def test_it_lets_a_shifters_rule_beat_the_builtins():
    lines = ["std::bad_alloc in module Foo during event 12"]
    verdict = classify_failure(lines=lines, facts=FACTS_1, rules=[user_rule(3, r"module Foo")])
    assert verdict.key == "rule:3"
    assert classify_failure(lines=lines, facts=FACTS_1).key == "rule:builtin:bad-alloc"


def test_it_prefers_higher_priority_then_more_specific_then_older_rules():
    lines = ["FATAL: calibration table missing for run 1234"]
    older = user_rule(1, r"calibration")
    newer = user_rule(2, r"table missing")
    scoped = user_rule(3, r"calibration table", exit_codes=[1])
    urgent = user_rule(4, r"FATAL", priority=200)

    assert classify_failure(lines=lines, facts=FACTS_1, rules=[newer, older]).key == "rule:1"
    assert classify_failure(lines=lines, facts=FACTS_1, rules=[older, newer, scoped]).key == (
        "rule:3"
    )
    everything = [older, newer, scoped, urgent]
    assert classify_failure(lines=lines, facts=FACTS_1, rules=everything).key == "rule:4"
    # The tie-break does not depend on the order rules come in.
    assert sorted(everything, key=rule_sort_key) == sorted(reversed(everything), key=rule_sort_key)


def test_it_skips_rules_scoped_to_other_exit_codes_or_job_types():
    lines = ["ERROR: something odd"]
    rule = user_rule(5, r"odd", exit_codes=[2], job_types=["gen"])
    assert classify_failure(lines=lines, facts=FACTS_1, rules=[rule]).key != "rule:5"
    facts = FailureFacts(exit_code=2, signal=None, reported_success=None, job_type="GEN")
    assert classify_failure(lines=lines, facts=facts, rules=[rule]).key == "rule:5"


@pytest.mark.parametrize(
    ("line", "key", "category"),
    [
        ("/cvmfs/dune.opensciencegrid.org/products: Transport endpoint is not connected",
         "rule:builtin:cvmfs", Category.SITE),
        ("ERROR: cvmfs repository larsoft.opensciencegrid.org is not mounted",
         "rule:builtin:cvmfs", Category.SITE),
        ("/bin/sh: line 1: 4242 Bus error (core dumped) lar -c reco.fcl",
         "rule:builtin:bus-error", Category.SITE),
        ("terminate called after throwing an instance of 'std::bad_alloc'",
         "rule:builtin:bad-alloc", Category.RESOURCE),
        ("  Fatal Root Error: @SUB=TFile::ReadBuffer error reading all requested bytes",
         "rule:builtin:fatal-root-error", Category.INPUT),
        ("ifdh cp -D out.root /pnfs/dune/scratch failed with exit status 1",
         "rule:builtin:copy-failed", Category.SITE),
        ("[ERROR] Server responded with an error: [3010] Unable to open file",
         "rule:builtin:copy-failed", Category.SITE),
        ("xrdcp: error: unable to open remote file root://fndca1.fnal.gov//x.root",
         "rule:builtin:copy-failed", Category.SITE),
    ],
)  # fmt: skip
def test_it_ships_builtin_signatures(line, key, category):
    verdict = classify_failure(lines=["setup done", line, "exiting"], facts=FACTS_1)
    assert verdict.key == key
    assert verdict.spec.category == category
    assert verdict.line_index == 1


def test_it_ranks_a_stale_cvmfs_above_the_bus_error_it_causes():
    lines = [
        "cvmfs: repository dune.opensciencegrid.org is stale (revision 1234)",
        "Bus error (core dumped)",
    ]
    assert classify_failure(lines=lines, facts=FACTS_1).key == "rule:builtin:cvmfs"


def test_it_resolves_arts_exit_status_line_to_the_art_code():
    lines = ["Begin processing", "Art has completed and will exit with status 68."]
    verdict = classify_failure(lines=lines, facts=FACTS_1)
    assert verdict.key == "exit:art:68"
    assert verdict.source == Source.RULE
    assert verdict.spec.category == Category.RESOURCE
    # Status 0 says nothing about a failure.
    zero = classify_failure(
        lines=["Art has completed and will exit with status 0."],
        facts=FailureFacts(exit_code=143, signal=None, reported_success=None),
    )
    assert zero.key == "exit:unix:143"


CMS_LOG = """\
%MSG-i Root_Information: AfterFile TTree::ReadEntries
----- Begin Fatal Exception 12-Mar-2025 10:00:01 CET-----------------------
An exception of category 'FileReadError' occurred while
   [0] Processing  Event run: 1 lumi: 2 event: 30 stream: 0
   [1] Reading branch recoTracks
   Exception Message:
Read error on file root://cmsxrootd.fnal.gov//store/data/x.root
----- End Fatal Exception -------------------------------------------------
""".splitlines()


def test_it_resolves_a_cmsrun_fatal_exception_to_its_category():
    verdict = classify_failure(lines=CMS_LOG, facts=FACTS_1)
    assert verdict.key == "exit:cmssw:8021"
    assert verdict.spec.category == Category.INPUT
    assert verdict.line_index == 2
    assert CMS_LOG[2][slice(*verdict.span)] == "FileReadError"


ART_LOG = """\
%MSG-s ArtException:  PostEndJob 12-Mar-2025 10:00:00 CDT ModuleEndJob
cet::exception caught in art
---- Configuration BEGIN
  The parameter 'fcl.nonexistent' was not found.
---- Configuration END
%MSG
Art has completed and will exit with status 9.
""".splitlines()


def test_it_resolves_an_art_exception_block_to_its_category():
    verdict = classify_failure(lines=ART_LOG, facts=FACTS_1)
    assert verdict.key == "exit:art:9"
    assert verdict.spec.category == Category.CONFIG
    assert verdict.line_index == 2


def test_it_clusters_what_nothing_else_explains():
    miner = ErrorTemplateMiner()
    lines = ["event 12 done", "ERROR: calibration service returned HTTP 503 for run 1234"]
    verdict = classify_failure(lines=lines, facts=FACTS_1, cluster=miner.add_line)
    assert verdict.source == Source.CLUSTER
    assert verdict.key == f"cluster:{verdict.cluster.class_id}"
    assert verdict.line_index == 1


def test_it_prefers_the_cluster_over_a_generic_exit_code_and_falls_back_to_it():
    miner = ErrorTemplateMiner()
    facts = FailureFacts(exit_code=66, signal=None, reported_success=None)
    lines = ["Exception: track fitter diverged in event 77"]
    assert classify_failure(lines=lines, facts=facts, cluster=miner.add_line).source == (
        Source.CLUSTER
    )
    assert classify_failure(lines=[], facts=facts, cluster=miner.add_line).key == "exit:art:66"


def test_it_classifies_an_exit_0_with_a_reported_failure():
    facts = FailureFacts(exit_code=0, signal=None, reported_success=False)
    verdict = classify_failure(lines=["validation: 0 events written"], facts=facts)
    assert verdict.key == "check:reported-failure"


def test_it_says_unknown_when_nothing_is_known():
    facts = FailureFacts(exit_code=3, signal=None, reported_success=None, families=("unix",))
    verdict = classify_failure(lines=[], facts=facts)
    assert (verdict.key, verdict.source) == ("unknown:exit:3:no-log", Source.UNKNOWN)


@pytest.mark.parametrize(
    ("text", "headline"),
    [
        ("a\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n"
         "    main()\nKeyError: 'energy'\ncleanup done\n", "KeyError: 'energy'"),
        ("\n".join(CMS_LOG), "Read error on file root://cmsxrootd.fnal.gov//store/data/x.root"),
        ("\n".join(ART_LOG), "  The parameter 'fcl.nonexistent' was not found."),
        ("step 1\nWARNING: slow\nERROR: output directory not writable\nbye\n=====\n",
         "ERROR: output directory not writable"),
        ("step 1\nstep 2\nlast words\n\n", "last words"),
    ],
)  # fmt: skip
def test_it_finds_the_error_bearing_line(text, headline):
    lines = text.splitlines()
    found = errorlines.find_error_lines(lines)
    assert lines[found.headline] == headline
