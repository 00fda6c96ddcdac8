"""The log viewer page and its JSON line feed (Django test client)."""

import pytest
from django.test import Client

from logserver import indexing, selectors, services
from logserver.models import LogLine
from prodmon.models import Attempt, Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

XSS = (
    '<script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> '
    '<a href="javascript:alert(1)">x</a>'
)


@pytest.fixture
def member(experiment):
    user = UserFactory(username="shifter")
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)
    client = Client()
    client.force_login(user)
    return client


def _write(attempt, data: bytes, offset: int = 0, index: bool = True):
    services.log_chunk_store(attempt=attempt, offset=offset, data=data)
    end = max(attempt.log_bytes, offset + len(data))
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=end)
    attempt.log_bytes = end
    if index:
        indexing.log_index_attempt(attempt_id=attempt.pk)


def test_it_shows_the_tail_with_numbered_linkable_lines(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"first\nsecond\n")
    r = member.get(f"/attempts/{attempt.uid}/log")
    assert r.status_code == 200
    html = r.content.decode()
    assert 'id="L1"' in html
    assert 'href="#L2"' in html
    assert "second" in html


def test_it_escapes_markup_in_log_lines(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, XSS.encode() + b"\n")
    html = member.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert "<script>window.pwned" not in html
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html


def test_it_renders_ansi_colours_as_classes_and_drops_other_escapes(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"\x1b[1;31mERROR\x1b[0m plain \x1b]0;title\x07\x1b[2Kdone\n")
    html = member.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert '<span class="a-fg1 a-b">ERROR</span> plain done' in html
    assert "\x1b" not in html
    assert "title" not in html.split('id="L1"')[1]


def test_it_shows_invalid_utf8_with_replacement_characters(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"bad \xff\xfe bytes \x00 nul\n")
    html = member.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert "bad \ufffd\ufffd bytes \u2400 nul" in html


def test_it_marks_errors_and_warnings_and_links_the_first_error(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"ok\nWarning: low disk\nok\nFatal Root Error\nlater error\n")
    html = member.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert 'class="ln lv-warning" id="L2"' in html
    assert 'class="ln lv-error" id="L4"' in html
    assert 'href="?line=4#L4"' in html


def test_it_shows_a_gap_as_a_line_of_its_own(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"before\n")
    _write(attempt, b"after\n", offset=1234 + 7)
    html = member.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert "[… 1,234 bytes missing …]" in html
    assert 'class="ln lv-info gap" id="L2"' in html
    assert 'id="L3"' in html


def test_it_windows_a_long_log_and_opens_a_linked_line_in_context(
    member, make_attempt, django_assert_max_num_queries
):
    attempt = make_attempt()
    _write(attempt, "".join(f"line number {i}\n" for i in range(1, 10_001)).encode())
    page = selectors.log_page(attempt=attempt)
    assert (page.first, page.last, page.known_lines, page.at_end) == (8001, 10000, 10000, True)
    r = member.get(f"/attempts/{attempt.uid}/log?line=5000")
    html = r.content.decode()
    assert 'id="L4900"' in html
    assert 'id="L5000"' in html
    assert 'id="L6899"' in html
    assert 'id="L4899"' not in html
    assert 'id="L6900"' not in html
    assert "line number 5000<" in html
    assert "?from=6900" in html  # next page
    # The marks let the window start near line 5000 instead of byte 0.
    with django_assert_max_num_queries(12):
        window = selectors.log_page(attempt=attempt, from_line=5000, page_lines=10)
    assert [v.number for v in window.lines] == list(range(5000, 5010))


def test_it_caps_a_very_long_line_and_serves_it_in_full_on_demand(member, make_attempt):
    attempt = make_attempt()
    long_line = b"x" * 1_500_000
    _write(attempt, b"short\n" + long_line + b"\nafter\n")
    r = member.get(f"/attempts/{attempt.uid}/log")
    assert len(r.content) < 100_000
    assert "show full line (1.4" in r.content.decode()
    r = member.get(f"/attempts/{attempt.uid}/log/lines", {"offset": 6, "line": 2, "full": "1"})
    line = r.json()["lines"][0]
    assert line["n"] == 2
    assert line["truncated"] is True
    assert len(line["segments"][0][0]) == selectors.FULL_LINE_CAP
    assert line["content_length"] == 1_500_000


def test_the_line_feed_returns_new_lines_after_an_offset(member, make_attempt):
    attempt = make_attempt()
    _write(attempt, b"one\ntwo\nthr", index=False)
    url = f"/attempts/{attempt.uid}/log/lines"
    data = member.get(url, {"offset": 4, "line": 2}).json()
    assert [(x["n"], x["partial"]) for x in data["lines"]] == [(2, False), (3, True)]
    assert (data["next_offset"], data["next_line"], data["running"]) == (8, 3, True)
    _write(attempt, b"ee\n<b>four</b>\n", offset=11, index=False)
    data = member.get(url, {"offset": 8, "line": 3}).json()
    assert [x["segments"][0][0] for x in data["lines"]] == ["three", "<b>four</b>"]
    assert (data["next_offset"], data["next_line"]) == (26, 5)


def test_search_within_the_log_lists_matching_lines(member, make_attempt):
    attempt = make_attempt()
    other = make_attempt()
    _write(attempt, b"alpha\nneedle here\nbeta\n")
    _write(other, b"needle elsewhere\n")
    html = member.get(f"/attempts/{attempt.uid}/log", {"q": "needle"}).content.decode()
    assert "1 indexed line match" in html
    assert "?line=2&amp;q=needle#L2" in html
    assert "<mark>needle</mark> here" in html
    assert "elsewhere" not in html


def test_an_outsider_gets_a_404_and_a_visitor_the_login(make_attempt, other_experiment):
    attempt = make_attempt()
    _write(attempt, b"secret\n")
    outsider = UserFactory()
    MembershipFactory(user=outsider, experiment=other_experiment)
    client = Client()
    client.force_login(outsider)
    for path in ("", "/lines", "/download"):
        assert client.get(f"/attempts/{attempt.uid}/log{path}").status_code == 404
    r = Client().get(f"/attempts/{attempt.uid}/log")
    assert r.status_code == 302
    assert "/accounts/login/" in r["Location"]


def test_a_log_indexed_lines_agree_with_the_viewer_across_gaps(make_attempt):
    attempt = make_attempt()
    _write(attempt, b"a\nb")
    _write(attempt, b"c\nd\n", offset=7)
    Attempt.objects.filter(pk=attempt.pk).update(status="failed", exit_code=1)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    indexed = dict(LogLine.objects.filter(attempt=attempt).values_list("line_no", "text"))
    shown = {
        v.number: "".join(t for t, _, _ in v.segments)
        for v in selectors.log_page(attempt=attempt).lines
        if not v.is_gap
    }
    assert indexed == shown == {1: "a", 2: "b", 4: "c", 5: "d"}
