"""Triage pages: scoping (404 outside), shifter-only changes (403 for viewers),
CSRF, the preview-before-save rule flow, and escaping of log text."""

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from prodmon.models import AuditEntry
from triage import services
from triage.models import ErrorClass, SignatureRule

pytestmark = pytest.mark.django_db

BAD_ALLOC = "event 7\nterminate called after throwing an instance of 'std::bad_alloc'\n"


def client_for(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def failures(ended_attempt):
    """A few classified failures: bad_alloc, a cluster, and a hostile log line."""
    rows = [services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk) for _ in range(2)]
    cluster = services.attempt_classify(
        attempt_id=ended_attempt(log="ok\nERROR: <script>alert(1)</script> broke calib 17\n").pk
    )
    return {"bad_alloc": rows[0].error_class, "cluster": cluster.error_class}


def test_it_requires_a_login(failures):
    for url in (reverse("triage-summary"), failures["cluster"].get_absolute_url()):
        response = Client().get(url)
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]


def test_it_shows_the_summary_to_members_only(failures, people):
    page = client_for(people["viewer"]).get(reverse("triage-summary"))
    assert page.status_code == 200
    assert b"Out of memory (std::bad_alloc)" in page.content
    assert b"Stage \xc3\x97 site" in page.content
    outsider = client_for(people["outsider"]).get(reverse("triage-summary"))
    assert b"std::bad_alloc" not in outsider.content


def test_it_links_the_summary_filters_to_the_job_table(failures, people, stage):
    page = client_for(people["viewer"]).get(
        reverse("triage-summary"), {"campaign": stage.campaign_id, "site": "FNAL", "window": "24h"}
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/jobs/?state=failed&amp;campaign={stage.campaign_id}&amp;site=FNAL" in html
    assert f"stage={stage.pk}" in html  # the matrix cells


def test_it_hides_classes_of_other_experiments(failures, people):
    url = failures["bad_alloc"].get_absolute_url()
    assert client_for(people["viewer"]).get(url).status_code == 200
    assert client_for(people["outsider"]).get(url).status_code == 404


def test_it_escapes_log_text_and_highlights_by_splitting(failures, people):
    page = client_for(people["viewer"]).get(failures["cluster"].get_absolute_url())
    html = page.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    bad = (
        client_for(people["viewer"]).get(failures["bad_alloc"].get_absolute_url()).content.decode()
    )
    assert '<mark class="hit">std::bad_alloc</mark>' in bad


def test_it_lets_shifters_change_status_and_viewers_not(failures, people):
    error_class = failures["bad_alloc"]
    url = reverse("triage-class-status", args=[error_class.pk])
    assert client_for(people["viewer"]).post(url, {"status": "resolved"}).status_code == 403
    assert client_for(people["outsider"]).post(url, {"status": "resolved"}).status_code == 404
    assert client_for(people["shifter"]).get(url).status_code == 405
    response = client_for(people["shifter"]).post(url, {"status": "resolved"})
    assert response.status_code == 302
    error_class.refresh_from_db()
    assert error_class.status == ErrorClass.Status.RESOLVED
    audit = AuditEntry.objects.get(action="error_class.status")
    assert audit.actor == people["shifter"]
    assert audit.params == {"from": "new", "to": "resolved"}


def test_it_lets_a_shifter_name_a_cluster(failures, people):
    error_class = failures["cluster"]
    url = reverse("triage-class-edit", args=[error_class.pk])
    data = {
        "title": "Calibration broken",
        "category": "software",
        "explanation": "x",
        "suggested_action": "y",
    }
    assert client_for(people["viewer"]).get(url).status_code == 403
    assert client_for(people["viewer"]).post(url, data).status_code == 403
    assert client_for(people["shifter"]).post(url, data).status_code == 302
    error_class.refresh_from_db()
    assert (error_class.title, error_class.named_by) == ("Calibration broken", people["shifter"])
    assert AuditEntry.objects.filter(action="error_class.update", actor=people["shifter"]).exists()


RULE = {
    "name": "calib",
    "pattern": r"broke calib \d+",
    "priority": "100",
    "enabled": "on",
    "title": "Calibration constants broken",
    "category": "software",
}


def test_viewers_cannot_create_or_edit_rules(failures, people, experiment):
    viewer = client_for(people["viewer"])
    new = reverse("triage-rule-create") + f"?experiment={experiment.pk}"
    assert viewer.get(new).status_code == 403
    assert viewer.post(new, {**RULE, "action": "preview"}).status_code == 403
    rule = services.rule_create(
        experiment=experiment,
        actor=people["shifter"],
        rule_data={"name": "r", "pattern": "x"},
        class_data={},
    )
    edit = reverse("triage-rule-edit", args=[rule.pk])
    assert viewer.get(edit).status_code == 403
    assert viewer.post(edit, {**RULE, "action": "save"}).status_code == 403
    outsider = client_for(people["outsider"])
    assert outsider.get(edit).status_code == 404
    assert outsider.get(new).status_code == 404


def test_it_previews_a_rule_before_saving_it(
    failures, people, experiment, django_capture_on_commit_callbacks
):
    shifter = client_for(people["shifter"])
    url = reverse("triage-rule-create") + f"?experiment={experiment.pk}"
    # Saving without a preview only shows the preview.
    blind = shifter.post(url, {**RULE, "action": "save"})
    assert blind.status_code == 200
    assert not SignatureRule.objects.exists()

    preview = shifter.post(url, {**RULE, "action": "preview"})
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "would match" in html
    assert 'value="save"' in html
    assert "moves here from" in html
    assert escape(failures["cluster"].title) in html  # what it would take from
    assert '<mark class="hit">broke calib 17</mark>' in html
    token = re.search(r'name="preview_token" value="([^"]+)"', html).group(1)

    # A changed pattern needs a new preview.
    changed = shifter.post(
        url, {**RULE, "pattern": r"broke calib", "action": "save", "preview_token": token}
    )
    assert changed.status_code == 200
    assert not SignatureRule.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        saved = shifter.post(url, {**RULE, "action": "save", "preview_token": token})
    assert saved.status_code == 302
    rule = SignatureRule.objects.get()
    assert (rule.pattern, rule.created_by, rule.error_class.title) == (
        RULE["pattern"],
        people["shifter"],
        "Calibration constants broken",
    )
    assert AuditEntry.objects.filter(action="rule.create", actor=people["shifter"]).exists()
    # The recent failure it previewed now belongs to the rule's class.
    assert rule.error_class.classifications.count() == 1


def test_it_rejects_dangerous_or_broken_patterns_with_a_form_error(people, experiment):
    shifter = client_for(people["shifter"])
    url = reverse("triage-rule-create") + f"?experiment={experiment.pk}"
    for pattern, message in [
        ("(a+)+$", "may not contain another repetition"),
        ("(ab|a)*c", "may not contain alternatives"),
        ("(x)\\1", "Backreferences"),
        ("broken[", "Not a valid regular expression"),
        ("a" * 500, "at most 400 characters"),
    ]:
        response = shifter.post(url, {**RULE, "pattern": pattern, "action": "preview"})
        assert response.status_code == 200
        assert message in response.content.decode(), pattern
    assert not SignatureRule.objects.exists()


def test_it_enforces_csrf_on_the_rule_form(people, experiment):
    client = client_for(people["shifter"], enforce_csrf_checks=True)
    url = reverse("triage-rule-create") + f"?experiment={experiment.pk}"
    assert client.post(url, {**RULE, "action": "preview"}).status_code == 403
    page = client.get(url)
    token = page.cookies["csrftoken"].value
    ok = client.post(url, {**RULE, "action": "preview", "csrfmiddlewaretoken": token})
    assert ok.status_code == 200


def test_it_promotes_a_cluster_to_a_rule(
    failures, people, experiment, django_capture_on_commit_callbacks
):
    cluster = failures["cluster"]
    url = reverse("triage-class-promote", args=[cluster.pk])
    assert client_for(people["viewer"]).get(url).status_code == 403
    shifter = client_for(people["shifter"])
    form = shifter.get(url)
    assert form.status_code == 200
    pattern = form.context["form"].initial["pattern"]
    assert "broke calib" in pattern
    assert re.compile(pattern)
    data = {**RULE, "pattern": pattern}
    preview = shifter.post(url, {**data, "action": "preview"})
    token = preview.context["form"]["preview_token"].value()
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            shifter.post(url, {**data, "action": "save", "preview_token": token}).status_code == 302
        )
    rule = SignatureRule.objects.get()
    assert rule.error_class_id == cluster.pk  # the class keeps its history
    cluster.refresh_from_db()
    assert cluster.source == "rule"
    assert cluster.times_seen == 1
    assert AuditEntry.objects.filter(action="rule.promote").exists()


def test_it_serves_plotly_from_the_installed_package(people):
    response = client_for(people["viewer"]).get(reverse("triage-plotly-js"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript"
    assert b"plotly" in response.content[:2000].lower()
    assert "max-age" in response["Cache-Control"]


def test_it_lists_rules_with_the_builtins(people, failures):
    page = client_for(people["viewer"]).get(reverse("triage-rule-list"))
    assert page.status_code == 200
    assert b"CVMFS not mounted or stale" in page.content
    assert b"New rule for" not in page.content
    assert (
        b"New rule for dune"
        in client_for(people["shifter"]).get(reverse("triage-rule-list")).content
    )


def test_the_summary_is_cached_a_minute_and_says_as_of_when(
    failures, people, ended_attempt, settings
):
    from django.core.cache import cache

    from triage import selectors
    from triage.selectors import SummaryFilters

    settings.TRIAGE_SUMMARY_CACHE_SECONDS = 60
    cache.clear()
    viewer = client_for(people["viewer"])
    first = viewer.get(reverse("triage-summary"))
    assert "Figures as of" in first.content.decode()
    before = first.context["summary"]
    assert before.total_failures == 3
    # A new failure within the minute: the cached figures stand, as the page says.
    services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC).pk)
    again = viewer.get(reverse("triage-summary")).context["summary"]
    assert again.total_failures == 3
    assert again.computed_at == before.computed_at
    # Other filters are another entry; and once it expires the new failure counts.
    cache.clear()
    fresh = selectors.error_summary(
        filters=SummaryFilters(experiment_ids={failures["bad_alloc"].experiment_id})
    )
    assert fresh.total_failures == 4
    [cell] = fresh.matrix.values()
    assert (cell.failures, cell.top_class, cell.top_count) == (4, failures["bad_alloc"], 3)
    assert sum(r.failures for r in fresh.rows) == 4
