"""The database log index: LogLine rows plus the vendor's full-text index.

PostgreSQL: words match through a GIN index on to_tsvector('simple', text)
(plainto_tsquery), quoted phrases as case-insensitive substrings (ILIKE)
through a pg_trgm trigram GIN index. SQLite (the embedded default): two FTS5
tables kept in step by triggers, unicode61 for words and trigram for phrases.
Both are created by migration 0003_log_line_fulltext.
"""

from collections.abc import Sequence

from django.db import connection, transaction
from django.db.models import BooleanField, Q
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
        qs = LogLine.objects.filter(experiment_id__in=query.experiment_ids)
        for cond in _text_conditions(parsed):
            qs = qs.filter(cond)
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
        rows = list(
            qs.order_by("-timestamp", "-id").values_list(
                "attempt__uid", "line_no", "offset", "text", "timestamp", "level"
            )[query.offset : query.offset + query.limit + 1]
        )
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
