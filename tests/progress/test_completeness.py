"""File-level completeness: expected inputs (API, form, upload), missing and
duplicate inputs, their downloads, and the merge-order check."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from prodmon.models import Attempt, AuditEntry, InputSnapshot, Job
from prodmon.progress import completeness, services
from prodmon.progress.completeness import merge_order_check, parse_run_subrun
from tests.factories import AttemptFactory, JobFactory, make_token
from tests.progress.conftest import output

pytestmark = pytest.mark.django_db

INPUTS = [f"raw_run000100_{n:04d}.root" for n in range(1, 7)]  # subruns 1..6


def good_attempt(stage, key, **fields):
    job = JobFactory(stage=stage, key=key, state=Job.State.SUCCEEDED)
    attempt = AttemptFactory(job=job, number=1, status=Attempt.Status.SUCCEEDED, **fields)
    job.good_attempt = attempt
    job.save()
    return attempt


def declare(stage, names=INPUTS, actor=None):
    return services.stage_inputs_declare(
        stage=stage, items=names, source=InputSnapshot.Source.API, actor=actor
    )


@pytest.fixture
def produced(gen):
    """Outputs of gen: input 1 covered once, 2 twice (two jobs), 3 by a failed
    attempt only, 4 by a duplicate completion only, 5 once with two files from
    one attempt, 6 by nothing."""
    declare(gen)
    a1 = good_attempt(gen, "j1")
    output(a1, "out_1.root", [INPUTS[0]])
    output(good_attempt(gen, "j2a"), "out_2a.root", [INPUTS[1]])
    output(good_attempt(gen, "j2b"), "out_2b.root", [INPUTS[1]])
    failed = AttemptFactory(
        job=JobFactory(stage=gen, key="j3", state=Job.State.FAILED),
        number=1,
        status=Attempt.Status.FAILED,
    )
    output(failed, "out_3.root", [INPUTS[2]])
    j4 = good_attempt(gen, "j4").job
    dup = AttemptFactory(
        job=j4, number=2, status=Attempt.Status.SUCCEEDED, is_duplicate_completion=True
    )
    output(dup, "out_4.root", [INPUTS[3]])
    a5 = good_attempt(gen, "j5")
    output(a5, "out_5.root", [INPUTS[4]])
    output(a5, "hist_5.root", [INPUTS[4]])
    output(a1, "stray.root", ["not_declared.root"])
    return gen


def test_it_computes_missing_and_duplicate_inputs(produced):
    c = completeness.stage_completeness(stage_id=produced.pk)
    assert c.expected == 6
    assert c.covered == 3  # inputs 1, 2 and 5
    assert c.missing == [INPUTS[2], INPUTS[3], INPUTS[5]]
    assert [(d.name, d.attempts) for d in c.duplicates] == [(INPUTS[1], 2)]
    assert c.duplicates[0].outputs == ["out_2a.root", "out_2b.root"]
    assert c.unexpected_parents == 1
    assert completeness.stage_missing_inputs(produced.pk) == c.missing


def test_it_counts_a_duplicate_completion_as_a_duplicate(gen):
    declare(gen, [INPUTS[0]])
    first = good_attempt(gen, "j1")
    output(first, "out_a.root", [INPUTS[0]])
    dup = AttemptFactory(
        job=first.job, number=2, status=Attempt.Status.SUCCEEDED, is_duplicate_completion=True
    )
    output(dup, "out_b.root", [INPUTS[0]])
    c = completeness.stage_completeness(stage_id=gen.pk)
    assert c.missing == []
    assert [d.name for d in c.duplicates] == [INPUTS[0]]


def test_it_uses_only_the_latest_declaration(gen):
    declare(gen, INPUTS)
    declare(gen, INPUTS[:2])
    assert completeness.stage_completeness(stage_id=gen.pk).expected == 2
    assert InputSnapshot.objects.filter(stage=gen).count() == 2


def test_it_reports_nothing_missing_without_a_declaration(gen):
    c = completeness.stage_completeness(stage_id=gen.pk)
    assert not c.declared
    assert completeness.stage_missing_inputs(gen.pk) == []


def test_it_downloads_missing_inputs_as_text_and_csv(client, member, produced):
    client.force_login(member)
    text = client.get(reverse("progress-stage-download", args=[produced.pk, "missing", "txt"]))
    assert text["Content-Type"].startswith("text/plain")
    assert "attachment" in text["Content-Disposition"]
    assert text.content.decode().splitlines() == [INPUTS[2], INPUTS[3], INPUTS[5]]
    data = client.get(reverse("progress-stage-download", args=[produced.pk, "missing", "csv"]))
    rows = list(csv.reader(io.StringIO(data.content.decode())))
    assert rows == [["input"], [INPUTS[2]], [INPUTS[3]], [INPUTS[5]]]
    dups = client.get(reverse("progress-stage-download", args=[produced.pk, "duplicates", "csv"]))
    rows = list(csv.reader(io.StringIO(dups.content.decode())))
    assert rows == [["input", "attempts", "outputs"], [INPUTS[1], "2", "out_2a.root out_2b.root"]]


def test_it_hides_completeness_from_outsiders(client, outsider, produced):
    client.force_login(outsider)
    assert client.get(reverse("progress-stage", args=[produced.pk])).status_code == 404
    url = reverse("progress-stage-download", args=[produced.pk, "missing", "txt"])
    assert client.get(url).status_code == 404
    assert client.get(reverse("api-stage-completeness", args=[produced.pk])).status_code == 404


def test_it_needs_a_login(client, produced):
    response = client.get(reverse("progress-stage", args=[produced.pk]))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_it_shows_completeness_on_the_stage_page(client, member, produced):
    client.force_login(member)
    response = client.get(reverse("progress-stage", args=[produced.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="c-missing">3<' in html
    assert 'id="c-duplicates">1<' in html
    assert INPUTS[5] in html
    assert "Declare expected inputs" not in html  # a shifter may not declare


# --- declaring ------------------------------------------------------------------------------


def test_it_declares_inputs_with_an_ingest_token(client, gen, experiment):
    _, raw = make_token(experiment, scopes=("ingest",))
    response = client.post(
        reverse("api-stage-expected-inputs", args=[gen.pk]),
        {"files": [INPUTS[0], {"name": "custom.root", "run": 7, "subrun": 3}, INPUTS[0]]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 201, response.content
    snapshot = InputSnapshot.objects.get(stage=gen)
    assert snapshot.file_count == 2  # the repeated name is kept once
    assert snapshot.source == "api"
    assert snapshot.declared_by_label.startswith("token:dune:")
    custom = snapshot.inputs.get(name="custom.root")
    assert (custom.run, custom.subrun) == (7, 3)
    parsed = snapshot.inputs.get(name=INPUTS[0])
    assert (parsed.run, parsed.subrun) == (100, 1)
    entry = AuditEntry.objects.get(action="stage.inputs_declare")
    assert entry.params["files"] == 2
    assert entry.params["repeated_names_dropped"] == 1


def test_it_declares_inputs_as_plain_text(client, gen, experiment):
    _, raw = make_token(experiment, scopes=("ingest",))
    response = client.post(
        reverse("api-stage-expected-inputs", args=[gen.pk]),
        "# a comment\n" + "\n".join(INPUTS) + "\n\n",
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 201, response.content
    assert response.json()["snapshot"]["files"] == 6
    listed = client.get(
        reverse("api-stage-expected-inputs", args=[gen.pk]),
        HTTP_AUTHORIZATION=f"Bearer {make_token(experiment, scopes=('read',))[1]}",
    )
    assert listed.json()["files"] == INPUTS


def test_it_refuses_a_token_without_ingest_scope_or_of_another_experiment(
    client, gen, experiment, other_experiment
):
    _, read_only = make_token(experiment, scopes=("read",))
    url = reverse("api-stage-expected-inputs", args=[gen.pk])
    body = {"files": INPUTS}
    no_scope = client.post(
        url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {read_only}"
    )
    assert no_scope.status_code == 403
    _, foreign = make_token(other_experiment, scopes=("ingest", "read"))
    other = client.post(
        url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {foreign}"
    )
    assert other.status_code == 404
    assert not InputSnapshot.objects.exists()


def test_it_lets_only_managers_declare_in_the_ui(client, manager, member, gen):
    url = reverse("progress-stage-inputs", args=[gen.pk])
    client.force_login(member)
    assert client.post(url, {"names": "\n".join(INPUTS)}).status_code == 403
    client.force_login(manager)
    response = client.post(url, {"names": "\n".join(INPUTS), "note": "run 100 snapshot"})
    assert response.status_code == 302
    snapshot = InputSnapshot.objects.get(stage=gen)
    assert snapshot.file_count == 6
    assert snapshot.source == "form"
    assert snapshot.declared_by == manager
    assert snapshot.note == "run 100 snapshot"
    page = client.get(reverse("progress-stage", args=[gen.pk])).content.decode()
    assert "Declared 6 expected inputs." in page


def test_it_declares_inputs_from_an_uploaded_file(client, manager, gen):
    client.force_login(manager)
    upload = SimpleUploadedFile("inputs.txt", ("\n".join(INPUTS) + "\n").encode())
    response = client.post(reverse("progress-stage-inputs", args=[gen.pk]), {"upload": upload})
    assert response.status_code == 302
    snapshot = InputSnapshot.objects.get(stage=gen)
    assert snapshot.source == "upload"
    assert snapshot.file_count == 6


def test_it_checks_csrf_on_the_declaration_form(manager, gen):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    response = client.post(reverse("progress-stage-inputs", args=[gen.pk]), {"names": "a.root"})
    assert response.status_code == 403
    assert not InputSnapshot.objects.exists()


def test_it_lets_a_manager_declare_through_the_api_with_a_session(client, manager, member, gen):
    url = reverse("api-stage-expected-inputs", args=[gen.pk])
    client.force_login(member)
    assert client.post(url, {"files": INPUTS}, content_type="application/json").status_code == 403
    client.force_login(manager)
    assert client.post(url, {"files": INPUTS}, content_type="application/json").status_code == 201


def test_it_rejects_an_empty_list(client, experiment, gen):
    _, raw = make_token(experiment, scopes=("ingest",))
    response = client.post(
        reverse("api-stage-expected-inputs", args=[gen.pk]),
        "# nothing\n",
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 400


# --- merge order ------------------------------------------------------------------------------


def test_it_parses_run_and_subrun_from_file_names():
    assert parse_run_subrun("np04_raw_run005141_0003_dl1.root") == (5141, 3)
    assert parse_run_subrun("/pnfs/x/reco_run001234_subrun00056.root") == (1234, 56)
    assert parse_run_subrun("hist_r12_s7.root") == (12, 7)
    assert parse_run_subrun("dig.mu2e.CeEndpoint.MDC2020.001202_00000123.art") == (1202, 123)
    assert parse_run_subrun("gen_00042.root") is None


def test_it_detects_subrun_gaps_and_out_of_order_inputs():
    names = [
        "reco_run1_sr1.root",
        "reco_run1_sr2.root",
        "reco_run1_sr5.root",  # gap: 3-4
        "reco_run1_sr4.root",  # out of order (after 5)
        "reco_run2_sr1.root",
        "reco_run1_sr6.root",  # out of order: run 1 after run 2
        "reco_run2_sr3.root",  # gap: run 2 subrun 2
        "reco_run2_sr3_copy.root",  # same run and subrun again
        "mystery.root",
    ]
    check = merge_order_check([(n, None, None) for n in names])
    assert [(g.run, g.first, g.last) for g in check.gaps] == [(1, 3, 3), (2, 2, 2)]
    assert [(o.position, o.name) for o in check.out_of_order] == [
        (4, "reco_run1_sr4.root"),
        (6, "reco_run1_sr6.root"),
    ]
    assert check.out_of_order[0].after == "reco_run1_sr5.root"
    assert check.repeated == ["reco_run2_sr3_copy.root"]
    assert check.unparsed == ["mystery.root"]
    assert check.runs == 2
    assert not check.ok


def test_it_accepts_contiguous_ordered_subruns():
    check = merge_order_check([(f"f{i}.root", 9, i) for i in range(1, 51)])
    assert check.ok
    assert check.checked == 50
    assert check.missing_subruns == 0


def test_it_checks_the_merge_order_of_a_stage(client, member, gen):
    declare(gen, ["a_run3_s1.root", "a_run3_s2.root", "a_run3_s4.root", "a_run3_s3.root"])
    check = completeness.stage_merge_check(stage_id=gen.pk)
    assert [str(g) for g in check.gaps] == []  # 3 is there, only late
    assert [o.name for o in check.out_of_order] == ["a_run3_s3.root"]
    client.force_login(member)
    data = client.get(reverse("api-stage-completeness", args=[gen.pk])).json()
    assert data["merge_check"]["out_of_order"][0]["input"] == "a_run3_s3.root"
    assert data["merge_check"]["ok"] is False


def test_it_checks_a_merge_stage_from_its_parents_outputs(gen, reco):
    for i in (1, 2, 4):
        output(good_attempt(gen, f"g{i}"), f"gen_run8_sr{i}.root", [])
    check = completeness.stage_merge_check(stage_id=reco.pk)
    assert check.source == "outputs of the parent stages"
    assert [(g.run, g.first, g.last) for g in check.gaps] == [(8, 3, 3)]
    assert not check.ordered
    assert check.out_of_order == []
