"""Job.last_attempt, last_site and last_activity_at: the latest attempt of each
job, kept by database triggers on prodmon_attempt (PostgreSQL and SQLite).

Why triggers: every writer of attempts (the ingest path, the submission layer,
operator actions, the batch-event poller, tests) keeps the job table's columns
right without having to remember a call, in the same transaction as the
attempt write. Status, exit code, signal and node name are not copied: the
job table reads them through last_attempt (one join for a page of rows).

Lock order: an attempt write that changes only last_heartbeat_at (the
heartbeat path, which locks the attempt alone) updates the job row with
SKIP LOCKED, so it never waits behind a transaction that holds the job and
waits for the attempt (start and end lock the job first). If the job is
locked at that moment, that heartbeat's time is not copied; the next attempt
write copies it.

`backfill()` recomputes every job from its attempts: the migration runs it,
and so does bench.pages after a COPY load (COPY with
session_replication_role=replica does not fire triggers).
"""

ACTIVITY = "coalesce(a.ended_at, a.last_heartbeat_at, a.started_at, a.created_at)"
NEW_ACTIVITY = "coalesce(NEW.ended_at, NEW.last_heartbeat_at, NEW.started_at, NEW.created_at)"

_PG_BACKFILL = f"""
UPDATE prodmon_job j SET last_attempt_id = a.id, last_site = coalesce(n.site, ''),
    last_activity_at = {ACTIVITY}
FROM (SELECT DISTINCT ON (job_id) id, job_id, node_id, ended_at, last_heartbeat_at,
      started_at, created_at FROM prodmon_attempt ORDER BY job_id, number DESC) a
LEFT JOIN prodmon_node n ON n.id = a.node_id
WHERE j.id = a.job_id
"""

_SQLITE_BACKFILL = (
    "UPDATE prodmon_job SET last_attempt_id = (SELECT id FROM prodmon_attempt a "
    "WHERE a.job_id = prodmon_job.id ORDER BY a.number DESC LIMIT 1)",
    "UPDATE prodmon_job SET last_site = coalesce((SELECT n.site FROM prodmon_attempt a "
    "JOIN prodmon_node n ON n.id = a.node_id WHERE a.id = prodmon_job.last_attempt_id), ''), "
    f"last_activity_at = (SELECT {ACTIVITY} FROM prodmon_attempt a "
    "WHERE a.id = prodmon_job.last_attempt_id) WHERE last_attempt_id IS NOT NULL",
)

_PG_CREATE = f"""
CREATE OR REPLACE FUNCTION prodmon_job_latest_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    heartbeat_only boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE prodmon_job SET last_attempt_id = NULL, last_site = '', last_activity_at = NULL
        WHERE id = OLD.job_id AND (last_attempt_id = OLD.id OR last_attempt_id IS NULL);
        UPDATE prodmon_job j SET last_attempt_id = a.id, last_site = coalesce(n.site, ''),
            last_activity_at = {ACTIVITY}
        FROM (SELECT * FROM prodmon_attempt WHERE job_id = OLD.job_id
              ORDER BY number DESC LIMIT 1) a
        LEFT JOIN prodmon_node n ON n.id = a.node_id
        WHERE j.id = OLD.job_id AND j.last_attempt_id IS NULL;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.job_id = OLD.job_id AND NEW.number = OLD.number
           AND NEW.node_id IS NOT DISTINCT FROM OLD.node_id
           AND NEW.created_at IS NOT DISTINCT FROM OLD.created_at
           AND NEW.started_at IS NOT DISTINCT FROM OLD.started_at
           AND NEW.ended_at IS NOT DISTINCT FROM OLD.ended_at THEN
            IF NEW.last_heartbeat_at IS NOT DISTINCT FROM OLD.last_heartbeat_at THEN
                RETURN NULL;  -- nothing the job row keeps has changed
            END IF;
            heartbeat_only := true;
        END IF;
    END IF;
    UPDATE prodmon_job j SET last_attempt_id = NEW.id,
        last_site = coalesce((SELECT site FROM prodmon_node WHERE id = NEW.node_id), ''),
        last_activity_at = {NEW_ACTIVITY}
    WHERE j.id = NEW.job_id
      AND (j.last_attempt_id IS NULL OR j.last_attempt_id = NEW.id
           OR NEW.number > (SELECT number FROM prodmon_attempt WHERE id = j.last_attempt_id))
      AND (NOT heartbeat_only OR j.id IN (
           SELECT id FROM prodmon_job WHERE id = NEW.job_id FOR UPDATE SKIP LOCKED));
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS prodmon_job_latest_attempt ON prodmon_attempt;
CREATE TRIGGER prodmon_job_latest_attempt AFTER INSERT OR UPDATE OR DELETE ON prodmon_attempt
FOR EACH ROW EXECUTE FUNCTION prodmon_job_latest_attempt();
"""

_PG_DROP = """
DROP TRIGGER IF EXISTS prodmon_job_latest_attempt ON prodmon_attempt;
DROP FUNCTION IF EXISTS prodmon_job_latest_attempt();
"""

_SQLITE_SET = f"""
    UPDATE prodmon_job SET last_attempt_id = NEW.id,
        last_site = coalesce((SELECT site FROM prodmon_node WHERE id = NEW.node_id), ''),
        last_activity_at = {NEW_ACTIVITY}
    WHERE id = NEW.job_id
      AND (last_attempt_id IS NULL OR last_attempt_id = NEW.id
           OR NEW.number > (SELECT number FROM prodmon_attempt
                            WHERE id = prodmon_job.last_attempt_id));
"""

_SQLITE_CREATE = (
    "CREATE TRIGGER prodmon_job_latest_ins AFTER INSERT ON prodmon_attempt "
    f"BEGIN {_SQLITE_SET} END",
    "CREATE TRIGGER prodmon_job_latest_upd AFTER UPDATE OF job_id, number, node_id, created_at, "
    f"started_at, ended_at, last_heartbeat_at ON prodmon_attempt BEGIN {_SQLITE_SET} END",
    "CREATE TRIGGER prodmon_job_latest_del AFTER DELETE ON prodmon_attempt BEGIN "
    "UPDATE prodmon_job SET last_attempt_id = NULL, last_site = '', last_activity_at = NULL "
    "WHERE id = OLD.job_id AND (last_attempt_id = OLD.id OR last_attempt_id IS NULL); "
    "UPDATE prodmon_job SET last_attempt_id = (SELECT id FROM prodmon_attempt a "
    "WHERE a.job_id = OLD.job_id ORDER BY a.number DESC LIMIT 1) "
    "WHERE id = OLD.job_id AND last_attempt_id IS NULL; "
    "UPDATE prodmon_job SET last_site = coalesce((SELECT n.site FROM prodmon_attempt a "
    "JOIN prodmon_node n ON n.id = a.node_id WHERE a.id = prodmon_job.last_attempt_id), ''), "
    f"last_activity_at = (SELECT {ACTIVITY} FROM prodmon_attempt a "
    "WHERE a.id = prodmon_job.last_attempt_id) "
    "WHERE id = OLD.job_id AND last_attempt_id IS NOT NULL; END",
)

_SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS prodmon_job_latest_ins",
    "DROP TRIGGER IF EXISTS prodmon_job_latest_upd",
    "DROP TRIGGER IF EXISTS prodmon_job_latest_del",
)


def _statements(vendor: str, pg, sqlite) -> tuple[str, ...]:
    if vendor == "postgresql":
        return (pg,)
    if vendor == "sqlite":
        return sqlite
    raise NotImplementedError(f"job latest-attempt triggers: no support for {vendor}")


def install(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, _PG_CREATE, _SQLITE_CREATE):
            cursor.execute(sql)


def uninstall(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, _PG_DROP, _SQLITE_DROP):
            cursor.execute(sql)


def backfill(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, _PG_BACKFILL, _SQLITE_BACKFILL):
            cursor.execute(sql)
