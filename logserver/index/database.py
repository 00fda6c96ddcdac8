"""The database log index: LogLine rows plus the vendor's full-text index.

PostgreSQL: words match through a GIN index on to_tsvector('simple', text)
(plainto_tsquery), quoted phrases as case-insensitive substrings (ILIKE)
through a pg_trgm trigram GIN index. SQLite (the embedded default): two FTS5
tables kept in step by triggers, unicode61 for words and trigram for phrases.
Both are created by migration 0003_log_line_fulltext.

Query shape on PostgreSQL (measured with bench/logindex.py at 10 M lines):
results are newest first, LIMIT n + 1 (the extra row says "more"; nothing
ever counts all matches). Two plans exist and each is right half the time:

- "ordered": walk the (experiment, timestamp) index backwards and stop at n
  matches. Fast when matches are dense among the rows walked; with an
  uncommon word it filters hundreds of thousands of rows, each through
  to_tsvector(), for seconds (the planner's LIMIT costing assumes matches
  are spread evenly and picks it anyway).
- "gin": take every match from the GIN indexes and sort them (ordering by
  `timestamp + interval '0'` keeps the planner off the ordered index). Fast
  when matches are few, slow for a common word.

For words the choice is made from PostgreSQL's own row estimates (the GIN
statistics of the tsvector expression are good): the rows the GIN path would
fetch against the rows the ordered walk would filter (window x rows in range /
matches, each costing ~SCAN_COST fetches). For quoted phrases the ILIKE
estimates are right for common text but can be 10x low for rare text: when
the estimate says many, the ordered walk (ILIKE is a cheap filter); when it
says few, a probe reads (timestamp, id) of up to FEW_MATCHES matches through
the trigram index: if that is all of them, the page is cut from the probe and
only its rows are read, else the ordered walk.
"""

import json
from collections.abc import Sequence

from django.db import connection, transaction
from django.db.models import BooleanField, DateTimeField, Q, QuerySet
from django.db.models.expressions import RawSQL

from logserver.index.base import (
    AttemptLabels,
    IndexLine,
    LogIndex,
    ParsedQuery,
    SearchHit,
    SearchPage,
    SearchQuery,
)
from logserver.models import LogLine
from prodmon.models import Attempt

TABLE = LogLine._meta.db_table
FTS_WORDS = f"{TABLE}_fts"
FTS_TRIGRAMS = f"{TABLE}_trgm"
TSCONFIG = "simple"
WRITE_BATCH = 2000
# Phrases: at most this many matches are read whole through the trigram index.
FEW_MATCHES = 10_000
# Filtering a row in the ordered walk (to_tsvector) costs about this many GIN-path
# row fetches (measured at 10 M lines: ~9 µs against ~3-8 µs a fetched and sorted row).
SCAN_COST = 3


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _fts5_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _text_conditions(parsed: ParsedQuery) -> list[RawSQL]:
    column = f'"{TABLE}"."text"'
    conds: list[RawSQL] = []
    if connection.vendor == "postgresql":
        if parsed.words:
            conds.append(
                RawSQL(
                    f"to_tsvector('{TSCONFIG}'::regconfig, {column}) "
                    f"@@ plainto_tsquery('{TSCONFIG}'::regconfig, %s)",
                    [" ".join(parsed.words)],
                    output_field=BooleanField(),
                )
            )
        for phrase in parsed.phrases:
            conds.append(
                RawSQL(
                    f"{column} ILIKE %s ESCAPE '\\'",
                    [f"%{_like_escape(phrase)}%"],
                    output_field=BooleanField(),
                )
            )
        return conds
    if connection.vendor == "sqlite":
        ident = f'"{TABLE}"."id"'
        if parsed.words:
            conds.append(
                RawSQL(
                    f"{ident} IN (SELECT rowid FROM {FTS_WORDS} WHERE {FTS_WORDS} MATCH %s)",
                    [" ".join(_fts5_string(w) for w in parsed.words)],
                    output_field=BooleanField(),
                )
            )
        for phrase in parsed.phrases:
            if len(phrase) >= 3:
                conds.append(
                    RawSQL(
                        f"{ident} IN (SELECT rowid FROM {FTS_TRIGRAMS} "
                        f"WHERE {FTS_TRIGRAMS} MATCH %s)",
                        [_fts5_string(phrase)],
                        output_field=BooleanField(),
                    )
                )
            else:  # the trigram index needs three characters
                conds.append(
                    RawSQL(
                        f"instr(lower({column}), lower(%s)) > 0",
                        [phrase],
                        output_field=BooleanField(),
                    )
                )
        return conds
    # Any other database: correct, unindexed substring matches.
    for term in parsed.terms:
        conds.append(Q(text__icontains=term))
    return conds


def _estimated_rows(qs: QuerySet) -> float:
    plan = json.loads(qs.order_by().values("id").explain(format="json"))
    return float(plan[0]["Plan"]["Plan Rows"])


def _gin_is_cheaper(*, full: QuerySet, text_only: QuerySet, unfiltered: QuerySet, window: int):
    """Words: whether fetching every GIN match beats the ordered walk (see above)."""
    gin_rows = _estimated_rows(text_only)
    walked = window * _estimated_rows(unfiltered) / max(_estimated_rows(full), 1.0)
    return gin_rows <= SCAN_COST * walked


def _phrase_probe(qs: QuerySet) -> list[int] | None:
    """Phrases: the ids of every match, newest first, if there are at most
    FEW_MATCHES of them (else None)."""
    probe = list(qs.order_by().values_list("timestamp", "id")[: FEW_MATCHES + 1])
    if len(probe) > FEW_MATCHES:
        return None
    probe.sort(reverse=True)
    return [pk for _, pk in probe]


class DatabaseLogIndex(LogIndex):
    def ping(self) -> str:
        from logserver.models import LogLine

        LogLine.objects.only("pk").first()
        return "ok (database)"

    name = "database"

    def index_lines(self, labels: AttemptLabels, lines: Sequence[IndexLine]) -> None:
        if connection.vendor == "postgresql":
            self._index_lines_postgres(labels, lines)
            return
        rows = [
            LogLine(
                attempt_id=labels.attempt_id,
                experiment_id=labels.experiment_id,
                line_no=line.line_no,
                offset=line.offset,
                text=line.text,
                timestamp=line.timestamp,
                level=line.level,
            )
            for line in lines
        ]
        with transaction.atomic():
            for i in range(0, len(rows), WRITE_BATCH):
                LogLine.objects.bulk_create(
                    rows[i : i + WRITE_BATCH],
                    update_conflicts=True,
                    unique_fields=["attempt", "line_no"],
                    update_fields=["offset", "text", "timestamp", "level"],
                )

    def _index_lines_postgres(self, labels: AttemptLabels, lines: Sequence[IndexLine]) -> None:
        # One statement per batch, rows passed as arrays: the ORM's per-row
        # work would cost more than PostgreSQL's own index maintenance.
        offset_col = connection.ops.quote_name("offset")
        sql = (
            f"INSERT INTO {TABLE} (attempt_id, experiment_id, line_no, {offset_col}, text, "
            "timestamp, level) "
            "SELECT %s, %s, * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
            "%s::timestamptz[], %s::smallint[]) "
            "ON CONFLICT (attempt_id, line_no) DO UPDATE SET "
            f"{offset_col} = excluded.{offset_col}, text = excluded.text, "
            "timestamp = excluded.timestamp, level = excluded.level"
        )
        with connection.cursor() as cursor:
            for i in range(0, len(lines), WRITE_BATCH):
                batch = lines[i : i + WRITE_BATCH]
                cursor.execute(
                    sql,
                    [
                        labels.attempt_id,
                        labels.experiment_id,
                        [x.line_no for x in batch],
                        [x.offset for x in batch],
                        [x.text for x in batch],
                        [x.timestamp for x in batch],
                        [x.level for x in batch],
                    ],
                )

    def delete_lines_from(self, labels: AttemptLabels, line_no: int) -> None:
        LogLine.objects.filter(attempt_id=labels.attempt_id, line_no__gte=line_no).delete()

    def delete_attempts(self, labels: Sequence[AttemptLabels]) -> None:
        ids = [label.attempt_id for label in labels]
        for i in range(0, len(ids), 500):
            LogLine.objects.filter(attempt_id__in=ids[i : i + 500]).delete()

    def search(self, query: SearchQuery) -> SearchPage:
        parsed = query.parsed
        if parsed.is_empty or not query.experiment_ids:
            return SearchPage()
        scope = LogLine.objects.filter(experiment_id__in=query.experiment_ids)
        qs = scope
        attempts = Attempt.objects.all()
        narrowed = False
        for value, lookup in (
            (query.campaign, "job__stage__campaign__name"),
            (query.stage, "job__stage__name"),
            (query.site, "node__site"),
            (query.node, "node__hostname"),
        ):
            if value:
                attempts = attempts.filter(**{lookup: value})
                narrowed = True
        if query.exit_code is not None:
            attempts = attempts.filter(exit_code=query.exit_code)
            narrowed = True
        if narrowed:
            qs = qs.filter(attempt_id__in=attempts.values("pk"))
        if query.attempt_ids is not None:
            qs = qs.filter(attempt_id__in=list(query.attempt_ids))
        if query.since is not None:
            qs = qs.filter(timestamp__gte=query.since)
        if query.until is not None:
            qs = qs.filter(timestamp__lt=query.until)
        unfiltered = qs
        text_only = scope
        for cond in _text_conditions(parsed):
            qs = qs.filter(cond)
            text_only = text_only.filter(cond)
        start, stop = query.offset, query.offset + query.limit + 1
        fields = ("attempt__uid", "line_no", "offset", "text", "timestamp", "level")
        ordered = qs.order_by("-timestamp", "-id")
        if connection.vendor != "postgresql":
            rows = list(ordered.values_list(*fields)[start:stop])
        elif (
            parsed.phrases
            and _estimated_rows(qs) <= FEW_MATCHES
            and (ids := _phrase_probe(qs)) is not None
        ):
            page = ids[start:stop]
            rows = list(
                LogLine.objects.filter(id__in=page)
                .order_by("-timestamp", "-id")
                .values_list(*fields)
            )
        elif not parsed.phrases and _gin_is_cheaper(
            full=qs, text_only=text_only, unfiltered=unfiltered, window=stop
        ):
            gin = qs.annotate(
                unordered_ts=RawSQL(
                    f'"{TABLE}"."timestamp" + interval \'0 seconds\'',
                    [],
                    output_field=DateTimeField(),
                )
            ).order_by("-unordered_ts", "-id")
            rows = list(gin.values_list(*fields)[start:stop])
        else:
            rows = list(ordered.values_list(*fields)[start:stop])
        hits = [
            SearchHit(
                attempt_uid=str(uid),
                line_no=line_no,
                offset=offset,
                text=text,
                timestamp=timestamp,
                level=level,
            )
            for uid, line_no, offset, text, timestamp, level in rows[: query.limit]
        ]
        return SearchPage(hits=hits, has_more=len(rows) > query.limit)
