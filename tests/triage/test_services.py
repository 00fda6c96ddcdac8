"""Classification records, the error-class lifecycle, success criteria and
an experiment's own codes."""

import datetime as dt
import sys
import textwrap

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from prodmon.models import Attempt, AuditEntry, Job, OutputFile
from tests.factories import JobFactory
from triage import services
from triage.models import AttemptClassification, CustomExitCode, ErrorClass, SuccessCheck

pytestmark = pytest.mark.django_db

BAD_ALLOC = "reading event 7\nterminate called after throwing an instance of 'std::bad_alloc'\n"


def test_it_stores_one_classification_with_the_proving_line(ended_attempt):
    attempt = ended_attempt(log="line one\nline two\n" + BAD_ALLOC, exit_code=134)
    row = services.attempt_classify(attempt_id=attempt.pk)
    assert row.error_class.key == "rule:builtin:bad-alloc"
    assert row.source == "rule"
    assert row.line_number == 4
    assert row.line_is_absolute
    assert row.line[row.span_start : row.span_end] == "std::bad_alloc"
    assert [n for n, _ in row.excerpt] == [1, 2, 3, 4]
    assert (row.site, row.stage_id, row.campaign_id) == (
        "FNAL",
        attempt.job.stage_id,
        attempt.job.stage.campaign_id,
    )


def test_it_is_idempotent(ended_attempt):
    attempt = ended_attempt(log=BAD_ALLOC, exit_code=134)
    first = services.attempt_classify(attempt_id=attempt.pk)
    again = services.attempt_classify(attempt_id=attempt.pk)
    assert first.pk == again.pk
    assert AttemptClassification.objects.filter(attempt=attempt).count() == 1
    assert ErrorClass.objects.get(pk=first.error_class_id).times_seen == 1


def test_it_moves_an_attempt_when_its_verdict_changes(ended_attempt, experiment):
    attempt = ended_attempt(
        log="all fine until now\nsegment 3: calorimeter map missing\n", exit_code=1
    )
    before = services.attempt_classify(attempt_id=attempt.pk)
    old_class = before.error_class
    assert old_class.source == "cluster"
    from triage.models import SignatureRule

    new_class = ErrorClass.objects.create(
        experiment=experiment, key="rule:x", source="rule", title="map missing"
    )
    SignatureRule.objects.create(
        experiment=experiment, error_class=new_class, name="map", pattern="calorimeter map"
    )
    after = services.attempt_classify(attempt_id=attempt.pk)
    assert after.error_class_id == new_class.pk
    old_class.refresh_from_db()
    new_class.refresh_from_db()
    assert (old_class.times_seen, new_class.times_seen) == (0, 1)


def test_it_ignores_running_and_missing_attempts(ended_attempt):
    attempt = ended_attempt(log=BAD_ALLOC, status=Attempt.Status.RUNNING)
    assert services.attempt_classify(attempt_id=attempt.pk) is None
    assert services.attempt_classify(attempt_id=10**9) is None


# --- lifecycle -------------------------------------------------------------------


def test_it_walks_a_class_through_its_lifecycle_including_regression(ended_attempt, people):
    shifter = people["shifter"]
    first = services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk)
    error_class = first.error_class
    assert error_class.status == ErrorClass.Status.NEW
    assert error_class.first_seen == error_class.last_seen

    services.error_class_set_status(error_class=error_class, status="resolved", actor=shifter)
    # An attempt that ended before the fix does not reopen it...
    late = ended_attempt(log=BAD_ALLOC, ended_at=timezone.now() - dt.timedelta(hours=1))
    services.attempt_classify(attempt_id=late.pk)
    error_class.refresh_from_db()
    assert error_class.status == ErrorClass.Status.RESOLVED

    # ...a new one does: the class regressed.
    services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk)
    error_class.refresh_from_db()
    assert error_class.status == ErrorClass.Status.REGRESSED
    assert error_class.times_seen == 3
    assert AuditEntry.objects.filter(
        action="error_class.regressed", target_id=str(error_class.pk)
    ).exists()

    services.error_class_set_status(error_class=error_class, status="ignored", actor=shifter)
    services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk)
    error_class.refresh_from_db()
    assert error_class.status == ErrorClass.Status.IGNORED
    statuses = list(
        AuditEntry.objects.filter(action="error_class.status")
        .order_by("created_at")
        .values_list("result", flat=True)
    )
    assert statuses == ["resolved", "ignored"]


def test_it_calls_a_class_first_seen_over_a_week_ago_ongoing(ended_attempt):
    recent = ended_attempt(log=BAD_ALLOC, ended_at=timezone.now() - dt.timedelta(days=6))
    assert services.attempt_classify(attempt_id=recent.pk).error_class.status == "new"
    old_segv = ended_attempt(log="", exit_code=139, ended_at=timezone.now() - dt.timedelta(days=9))
    assert services.attempt_classify(attempt_id=old_segv.pk).error_class.status == "ongoing"


def test_the_sweep_settles_new_and_regressed_classes(ended_attempt):
    error_class = services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk).error_class
    later = timezone.now() + dt.timedelta(days=8)
    assert services.error_class_lifecycle_sweep(now=later) == 1
    error_class.refresh_from_db()
    assert error_class.status == ErrorClass.Status.ONGOING


# --- success criteria -------------------------------------------------------------


def succeeded(ended_attempt, *, expected, outputs, log="done\n", stage=None):
    job = JobFactory(expected_outputs=expected, **({"stage": stage} if stage else {}))
    attempt = ended_attempt(log=log, exit_code=0, status=Attempt.Status.SUCCEEDED, job=job)
    job.good_attempt = attempt
    job.state = Job.State.SUCCEEDED
    job.save()
    for name, size, checksum in outputs:
        OutputFile.objects.create(
            attempt=attempt,
            job=job,
            stage=job.stage,
            campaign=job.stage.campaign,
            name=name,
            size=size,
            checksum=checksum,
        )
    return attempt


def test_it_passes_an_attempt_with_all_declared_outputs(ended_attempt):
    attempt = succeeded(
        ended_attempt,
        expected=["reco_*.root", {"name": "hist.root", "size": 10, "checksum": "adler32:0000abcd"}],
        outputs=[("out/reco_1.root", 5, ""), ("hist.root", 10, "adler32:abcd")],
    )
    assert services.attempt_classify(attempt_id=attempt.pk) is None
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.SUCCEEDED


WITH_SUM = {"name": "reco.root", "checksum": "adler32:0a1b2c3d"}


@pytest.mark.parametrize(
    ("expected", "outputs", "key"),
    [
        (["reco.root"], [("other.root", 5, "")], "check:missing-output"),
        (["*.root"], [], "check:missing-output"),
        (["reco.root"], [("reco.root", 0, "")], "check:empty-output"),
        ([{"name": "reco.root", "size": 100}], [("reco.root", 99, "")], "check:size-mismatch"),
        ([WITH_SUM], [("reco.root", 9, "adler32:0a1b2c3e")], "check:checksum-mismatch"),
        ([WITH_SUM], [("reco.root", 9, "")], "check:checksum-mismatch"),
    ],
)
def test_it_fails_an_exit_0_attempt_whose_outputs_are_wrong(ended_attempt, expected, outputs, key):
    attempt = succeeded(ended_attempt, expected=expected, outputs=outputs)
    row = services.attempt_classify(attempt_id=attempt.pk)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.job.state == Job.State.FAILED
    assert (row.error_class.key, row.source) == (key, "check")
    assert AuditEntry.objects.filter(
        action="attempt.fail_post_check", target_id=str(attempt.pk)
    ).exists()
    # Classifying again keeps the check's verdict.
    assert services.attempt_classify(attempt_id=attempt.pk).error_class.key == key


def script(tmp_path, body: str) -> str:
    path = tmp_path / "check.py"
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path}"


def test_it_runs_the_stage_check_command_with_the_log_and_outputs(
    ended_attempt, stage, tmp_path, monkeypatch
):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")  # the worker's secrets stay with the worker
    command = script(
        tmp_path,
        """
        import json, os, sys
        log = sys.stdin.read()
        outputs = json.loads(os.environ["PRODMON_OUTPUTS"])
        if "SECRET_TOKEN" in os.environ:
            sys.exit(7)
        if "events written: 0" in log or outputs[0]["size"] < 100:
            print("no events in", os.environ["PRODMON_OUTPUT_NAMES"], file=sys.stderr)
            sys.exit(3)
        """,
    )
    SuccessCheck.objects.create(
        experiment=stage.campaign.experiment, stage=stage, name="events", command=command
    )
    good = succeeded(
        ended_attempt,
        expected=[],
        outputs=[("a.root", 500, "")],
        log="events written: 10\n",
        stage=stage,
    )
    assert services.attempt_classify(attempt_id=good.pk) is None

    bad = succeeded(
        ended_attempt,
        expected=[],
        outputs=[("a.root", 500, "")],
        log="events written: 0\n",
        stage=stage,
    )
    row = services.attempt_classify(attempt_id=bad.pk)
    assert row.error_class.key == "check:command-failed"
    assert "exited with 3" in row.line
    assert "no events in a.root" in row.line


def test_it_fails_an_attempt_whose_check_times_out(ended_attempt, stage, tmp_path):
    command = script(tmp_path, "import time\ntime.sleep(30)\n")
    SuccessCheck.objects.create(
        experiment=stage.campaign.experiment,
        campaign=stage.campaign,
        name="slow",
        command=command,
        timeout_s=1,
    )
    attempt = succeeded(ended_attempt, expected=[], outputs=[], stage=stage)
    started = timezone.now()
    row = services.attempt_classify(attempt_id=attempt.pk)
    assert row.error_class.key == "check:command-timeout"
    assert (timezone.now() - started).total_seconds() < 10


def test_it_does_not_fail_good_work_for_a_broken_check(ended_attempt, stage):
    SuccessCheck.objects.create(
        experiment=stage.campaign.experiment,
        stage=stage,
        name="typo",
        command="/no/such/check-binary",
    )
    attempt = succeeded(ended_attempt, expected=[], outputs=[], stage=stage)
    assert services.attempt_classify(attempt_id=attempt.pk) is None


# --- an experiment's own codes -----------------------------------------------------------


def test_it_loads_an_experiments_own_codes_from_yaml(tmp_path, experiment, ended_attempt):
    codes = tmp_path / "codes.yaml"
    codes.write_text(
        textwrap.dedent(
            """
            family: dune
            codes:
              - code: 42
                title: Geometry database unreachable
                category: site
                transient: true
                action: Retry later.
              - code: 137
                title: Killed by the DUNE watchdog
                category: resource-limit
            """
        )
    )
    call_command("triage_load_codes", str(codes), "--experiment", "dune")
    assert CustomExitCode.objects.filter(experiment=experiment).count() == 2
    row = services.attempt_classify(attempt_id=ended_attempt(exit_code=42).pk)
    assert (row.error_class.key, row.error_class.category, row.error_class.transient) == (
        "exit:dune:42",
        "site",
        True,
    )
    # The experiment's own meaning wins over the built-in families.
    assert (
        services.attempt_classify(attempt_id=ended_attempt(exit_code=137).pk).error_class.key
        == "exit:dune:137"
    )
    assert AuditEntry.objects.filter(action="custom_codes.load", experiment=experiment).exists()


def test_it_rejects_a_bad_codes_file(tmp_path, experiment):
    codes = tmp_path / "codes.yaml"
    codes.write_text("codes:\n  - code: 42\n    title: x\n    category: cosmic-rays\n")
    with pytest.raises(CommandError, match="category must be one of"):
        call_command("triage_load_codes", str(codes), "--experiment", "dune")
    with pytest.raises(CommandError, match="no experiment"):
        call_command("triage_load_codes", str(codes), "--experiment", "nope")
    assert not CustomExitCode.objects.exists()


def test_it_numbers_lines_from_the_start_of_a_log_longer_than_the_tail(ended_attempt, settings):
    settings.TRIAGE_TAIL_BYTES = 1024
    filler = "".join(f"step {n:04d} ok\n" for n in range(1, 301))  # 300 lines, 4.5 KB
    attempt = ended_attempt(log=filler + BAD_ALLOC, exit_code=134)
    row = services.attempt_classify(attempt_id=attempt.pk)
    assert row.tail_offset > 0
    assert row.line_is_absolute
    assert row.line_number == 302
    assert row.excerpt[-1] == [302, row.line]


def test_it_skips_a_slow_rule_and_still_classifies(ended_attempt, experiment, settings):
    from triage.models import SignatureRule

    settings.TRIAGE_RULE_BUDGET_SECONDS = 0.2
    slow_class = ErrorClass.objects.create(
        experiment=experiment, key="rule:slow", source="rule", title="slow"
    )
    # Passes the static checks (only the save-time probe would catch it), as
    # an old or imported rule could: polynomial, but hopeless on a long line.
    rule = SignatureRule.objects.create(
        experiment=experiment, error_class=slow_class, name="slow", pattern=r"a.*a.*a.*a.*a.*Q"
    )
    attempt = ended_attempt(log="a" * 1500 + "\n" + BAD_ALLOC, exit_code=134)
    started = timezone.now()
    row = services.attempt_classify(attempt_id=attempt.pk)
    assert (timezone.now() - started).total_seconds() < 5
    assert row.error_class.key == "rule:builtin:bad-alloc"
    rule.refresh_from_db()
    assert rule.last_timeout_at is not None


def test_the_sweep_classifies_failures_whose_task_was_lost(ended_attempt):
    lost = ended_attempt(log=BAD_ALLOC, exit_code=134)
    assert not AttemptClassification.objects.filter(attempt=lost).exists()
    assert services.attempt_classify_sweep() == 1
    assert AttemptClassification.objects.get(attempt=lost).error_class.key == (
        "rule:builtin:bad-alloc"
    )
    assert services.attempt_classify_sweep() == 0


def test_it_reads_exit_codes_with_the_experiments_families(ended_attempt, experiment, stage):
    from triage.models import TriageSettings

    art = services.attempt_classify(attempt_id=ended_attempt(exit_code=65).pk)
    assert art.error_class.key == "exit:art:65"  # the default: art, unix
    TriageSettings.objects.create(experiment=experiment, code_families=["cmssw", "wmcore", "unix"])
    cms = services.attempt_classify(attempt_id=ended_attempt(exit_code=65).pk)
    assert cms.error_class.key == "exit:wmcore:65"
    # A job type mapping beats the experiment-wide list.
    TriageSettings.objects.filter(experiment=experiment).update(job_type_families={"art": ["art"]})
    assert stage.job_type == "art"
    again = services.attempt_classify(attempt_id=ended_attempt(exit_code=65).pk)
    assert again.error_class.key == "exit:art:65"


def test_it_lets_a_rule_explain_a_reported_failure_later(ended_attempt, experiment):
    from triage.models import SignatureRule

    attempt = ended_attempt(
        log="validation: 0 events written\n", exit_code=0, reported_success=False
    )
    assert services.attempt_classify(attempt_id=attempt.pk).error_class.key == (
        "check:reported-failure"
    )
    named = ErrorClass.objects.create(experiment=experiment, key="rule:v", source="rule", title="v")
    SignatureRule.objects.create(
        experiment=experiment, error_class=named, name="v", pattern="0 events"
    )
    assert services.attempt_classify(attempt_id=attempt.pk).error_class_id == named.pk
