"""Ingest tokens, the idempotency record of every accepted event, and log chunks."""

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
    """One row per accepted event id: the idempotency key.

    A re-sent event hits the unique constraint and is acknowledged as a
    duplicate without being applied again.
    """

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    attempt = models.ForeignKey(
        Attempt, null=True, blank=True, on_delete=models.CASCADE, related_name="ingest_events"
    )
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "event_id"], name="ingest_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id}"


class LogChunk(models.Model):
    """A piece of an attempt's log, stored as the exact bytes received.

    Keyed by byte offset: a re-sent chunk at the same offset is a no-op.
    """

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="log_chunks")
    offset = models.BigIntegerField()
    length = models.IntegerField()
    data = models.BinaryField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["attempt", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "offset"], name="logchunk_unique_offset"),
            models.CheckConstraint(condition=models.Q(offset__gte=0), name="logchunk_offset_ge0"),
        ]

    def __str__(self) -> str:
        return f"{self.attempt_id}@{self.offset}+{self.length}"
