"""Full-text indexes of LogLine.text, per database vendor.

PostgreSQL: a GIN index on to_tsvector('simple', text) for words, and a
pg_trgm trigram GIN index for substrings and quoted phrases (ILIKE).
SQLite: two external-content FTS5 tables over logserver_logline (unicode61
words; trigram substrings), kept in step by triggers.
Any other database gets no index; search falls back to unindexed LIKE.
"""

from django.db import migrations

TABLE = "logserver_logline"

POSTGRES_FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS logline_text_tsv ON {TABLE} "
    "USING gin (to_tsvector('simple'::regconfig, text))",
    f"CREATE INDEX IF NOT EXISTS logline_text_trgm ON {TABLE} USING gin (text gin_trgm_ops)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS logline_text_trgm",
    "DROP INDEX IF EXISTS logline_text_tsv",
]

SQLITE_FORWARD = [
    f"CREATE VIRTUAL TABLE {TABLE}_fts USING fts5("
    f"text, content='{TABLE}', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    f"CREATE VIRTUAL TABLE {TABLE}_trgm USING fts5("
    f"text, content='{TABLE}', content_rowid='id', tokenize='trigram')",
    f"""CREATE TRIGGER {TABLE}_ai AFTER INSERT ON {TABLE} BEGIN
        INSERT INTO {TABLE}_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO {TABLE}_trgm(rowid, text) VALUES (new.id, new.text);
    END""",
    f"""CREATE TRIGGER {TABLE}_ad AFTER DELETE ON {TABLE} BEGIN
        INSERT INTO {TABLE}_fts({TABLE}_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO {TABLE}_trgm({TABLE}_trgm, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    f"""CREATE TRIGGER {TABLE}_au AFTER UPDATE OF text ON {TABLE} BEGIN
        INSERT INTO {TABLE}_fts({TABLE}_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO {TABLE}_trgm({TABLE}_trgm, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO {TABLE}_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO {TABLE}_trgm(rowid, text) VALUES (new.id, new.text);
    END""",
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {TABLE}_au",
    f"DROP TRIGGER IF EXISTS {TABLE}_ad",
    f"DROP TRIGGER IF EXISTS {TABLE}_ai",
    f"DROP TABLE IF EXISTS {TABLE}_trgm",
    f"DROP TABLE IF EXISTS {TABLE}_fts",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("logserver", "0002_log_index_full_logs_retention"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        ),
    ]
