"""Ingest tokens, the idempotency record of every accepted event, log chunks,
and what is derived from them: the line index, full logs and retention policies."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from prodmon.models import Attempt, Experiment

TOKEN_PREFIX = "pm_"


def token_digest(raw: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing
    # to brute-force. A slow KDF would put a bcrypt on the ingest hot path.
    return hashlib.sha256(raw.encode()).hexdigest()


class IngestToken(models.Model):
    class Scope(models.TextChoices):
        INGEST = "ingest", "post events and logs"
        READ = "read", "read this experiment's jobs and logs"

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="ingest_tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters, kept in clear so an operator can tell tokens apart.
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "name"]

    def __str__(self) -> str:
        return f"{self.experiment.name}:{self.name} ({self.prefix}…)"

    @staticmethod
    def generate_raw() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class IngestEvent(models.Model):
    """One row per accepted event id: the idempotency key, and the ingest queue.

    A re-sent event hits the unique constraint and is acknowledged as a
    duplicate without being applied again.

    With PRODMON_INGEST_MODE=queued the request only validates the event and
    inserts this row (state "queued", the validated event in `payload`); the
    drain (logserver.queue) applies queued rows in batches, in arrival order,
    and marks them "applied" (payload cleared) or "rejected" (payload kept,
    the reason in `note`). With the inline mode a row is written "applied" in
    the same transaction that applies the event.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        APPLIED = "applied", "applied"
        REJECTED = "rejected", "rejected"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    attempt = models.ForeignKey(
        Attempt, null=True, blank=True, on_delete=models.CASCADE, related_name="ingest_events"
    )
    received_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(
        max_length=8, choices=State.choices, default=State.APPLIED, db_default=State.APPLIED
    )
    # NULL once applied: the queue keeps no copy of what the tables now hold.
    payload = models.TextField(null=True, blank=True)  # noqa: DJ001
    # Why a queued event was rejected, or what the server said of an applied one.
    note = models.TextField(blank=True, default="", db_default="")
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "event_id"], name="ingest_event_once"),
        ]
        indexes = [
            # The drain's scan and the queue's gauges: only the few rows not
            # applied (queued, rejected), in arrival order.
            models.Index(
                fields=["state", "id"],
                name="ingest_event_pending",
                condition=~models.Q(state="applied"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id}"


class LogChunk(models.Model):
    """A piece of an attempt's log, stored as the exact bytes received.

    Keyed by byte offset: a re-sent chunk at the same offset is a no-op, and a
    longer chunk at an existing offset replaces the shorter one
    (logserver.services.log_chunk_store).
    """

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="log_chunks")
    offset = models.BigIntegerField()
    length = models.IntegerField()
    data = models.BinaryField()
    received_at = models.DateTimeField(default=timezone.now)
    # When the job wrote these bytes, as well as we know: the event's time, or
    # a Loki entry's timestamp. Null for chunks stored before it existed.
    logged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["attempt", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "offset"], name="logchunk_unique_offset"),
            models.CheckConstraint(condition=models.Q(offset__gte=0), name="logchunk_offset_ge0"),
        ]

    def __str__(self) -> str:
        return f"{self.attempt_id}@{self.offset}+{self.length}"


class LogLevel(models.IntegerChoices):
    INFO = 0, "info"
    WARNING = 1, "warning"
    ERROR = 2, "error"


class LogIndexCursor(models.Model):
    """How far an attempt's log has been cut into lines and indexed.

    Everything in [0, indexed_upto) is indexed as lines 1 .. next_line - 1.
    While the attempt runs only complete lines of the contiguous bytes are
    indexed; once it has ended the rest is, gaps included (one pseudo-line
    each). `rewind_points` remembers the lines that later bytes could change
    (a gap that may still be filled, a last line without a newline): if that
    happens the index is rewound to that line and redone.
    """

    attempt = models.OneToOneField(
        Attempt, primary_key=True, on_delete=models.CASCADE, related_name="log_index_cursor"
    )
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    indexed_upto = models.BigIntegerField(default=0)
    next_line = models.BigIntegerField(default=1)
    # The log end the last pass looked at: the reconciler only revisits an
    # attempt whose log has grown past it.
    seen_upto = models.BigIntegerField(default=0)
    finished = models.BooleanField(default=False)
    rewind_points = models.JSONField(default=list, blank=True)
    first_error_line = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # Set when retention removed the tail: nothing is left to index.
    purged_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"index of {self.attempt_id} up to byte {self.indexed_upto}"


class LogLine(models.Model):
    """One line of an attempt's log in the database log index.

    The text is what search sees: UTF-8 with replacement characters, ANSI
    escapes and NULs removed, cut at INDEX_MAX_LINE_CHARS. The exact bytes stay
    in LogChunk. The experiment is denormalised so scoping needs no join.
    Full-text indexes (PostgreSQL GIN tsvector + pg_trgm, SQLite FTS5) are
    created by migration 0003.
    """

    # No single-column indexes: (attempt, line_no) and (experiment, timestamp)
    # lead with these, and every index costs on the indexing hot path.
    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="+", db_index=False)
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    line_no = models.BigIntegerField()
    offset = models.BigIntegerField()
    text = models.TextField()
    timestamp = models.DateTimeField()
    level = models.PositiveSmallIntegerField(choices=LogLevel.choices, default=LogLevel.INFO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["attempt", "line_no"], name="logline_unique_line"),
        ]
        indexes = [models.Index(fields=["experiment", "timestamp"], name="logline_exp_time")]

    def __str__(self) -> str:
        return f"{self.attempt_id}:{self.line_no}"


class LogLineMark(models.Model):
    """Where every MARK_EVERY-th line starts, so the viewer can open line
    120,000 of a 100 MB log without counting newlines from byte 0. Kept for
    either index backend."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="+", db_index=False)
    line_no = models.BigIntegerField()
    offset = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["attempt", "line_no"], name="loglinemark_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.attempt_id}: line {self.line_no} at byte {self.offset}"


class FullLog(models.Model):
    """The complete log uploaded at the end of a job, kept in the file store
    (logserver.filestore) gzip-compressed. `size` and `sha256` describe the
    uncompressed bytes, exactly as the job wrote them."""

    attempt = models.OneToOneField(Attempt, on_delete=models.CASCADE, related_name="full_log")
    backend = models.CharField(max_length=16)
    storage_key = models.CharField(max_length=512)
    size = models.BigIntegerField()
    stored_size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"full log of {self.attempt_id} ({self.size} bytes)"


class LogRetentionPolicy(models.Model):
    """How long an experiment keeps log tails (chunks and their index) and full
    logs. An empty value, or no row at all, means the site default
    (PRODMON_LOG_TAIL_RETENTION_DAYS, PRODMON_FULL_LOG_RETENTION_DAYS)."""

    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="log_retention"
    )
    tail_days = models.PositiveIntegerField(null=True, blank=True)
    full_log_days = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "log retention policies"

    def __str__(self) -> str:
        return f"{self.experiment}: tails {self.tail_days} d, full logs {self.full_log_days} d"
