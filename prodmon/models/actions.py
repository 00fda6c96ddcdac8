"""Models of the action layer: retries, launches, bulk actions (issue 7).

A BulkAction is one operator request that submits work: a retry (of one job or
many), a recovery, or a stage launch. Its idempotency key makes a double click
or a re-sent form the same request. A BatchEvent is something a batch system
said about an attempt (an HTCondor job event, a Slurm state, a failed submit).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

__all__ = ["BatchEvent", "BulkAction"]


class BulkAction(models.Model):
    class Kind(models.TextChoices):
        RETRY = "retry"
        RECOVERY = "recovery"
        LAUNCH = "launch"

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for its back-out delay or a worker
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"  # nothing could be submitted
        CANCELLED = "cancelled"

    OPEN = (State.PENDING, State.RUNNING)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    idempotency_key = models.CharField(max_length=64, unique=True)
    experiment = models.ForeignKey(
        "Experiment", on_delete=models.CASCADE, related_name="bulk_actions"
    )
    # Set for launches and recoveries, and for retries confined to one stage.
    stage = models.ForeignKey(
        "Stage", null=True, blank=True, on_delete=models.CASCADE, related_name="bulk_actions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    # Runs no earlier than this: the back-out delay of a launch or recovery.
    not_before = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The run's lease: the process running the action renews it as it goes. A
    # running action whose lease ran out lost its process and is resumed by
    # whoever claims it first (a conditional update on lease_owner/lease_until).
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    # What the operator asked for: the filter or recovery type, force, more resources.
    params = models.JSONField(default=dict, blank=True)
    # The jobs confirmed on the confirmation page, so the count shown is the count run.
    job_ids = models.JSONField(default=list, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # Why items failed or were skipped, newest last, capped (the audit log has all).
    messages = models.JSONField(default=list, blank=True)
    result = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            # What the due-action sweep polls.
            models.Index(
                fields=["not_before"], condition=Q(state="pending"), name="bulkaction_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("action-detail", args=[self.pk])

    @property
    def processed(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN


class BatchEvent(models.Model):
    """One thing the batch system said about an attempt. `seq` orders the events
    of one attempt as the batch system logged them (the HTCondor event log's
    order); re-reading a log never adds a row twice."""

    attempt = models.ForeignKey("Attempt", on_delete=models.CASCADE, related_name="batch_events")
    backend = models.CharField(max_length=16)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=48)  # "held", "terminated", "submit_failed", "TIMEOUT" …
    event_code = models.IntegerField(null=True, blank=True)  # HTCondor event type number
    at = models.DateTimeField()
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.IntegerField(null=True, blank=True)
    hold_reason_code = models.IntegerField(null=True, blank=True)
    hold_reason_subcode = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["attempt", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "seq"], name="batchevent_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.attempt_id} at {self.at:%Y-%m-%d %H:%M}"
