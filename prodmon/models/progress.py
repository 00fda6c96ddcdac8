"""Models of progress tracking (issue 6): expected inputs of a stage (a dataset
snapshot, like a SAM project's), weekly-report subscriptions, notification
settings and the notifications themselves, and the progress events that make
"stage done" and "failure spike" fire once."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from prodmon.models.core import Experiment, Stage

__all__ = [
    "ExpectedInput",
    "InputSnapshot",
    "Notification",
    "NotificationKind",
    "NotificationSubscription",
    "ProgressEvent",
    "ReportDelivery",
    "ReportSubscription",
]


class InputSnapshot(models.Model):
    """The list of input files a stage must process, declared at one moment.

    Write-once: a new declaration is a new snapshot and the latest one is the
    stage's current expectation; older ones stay for the record.
    """

    class Source(models.TextChoices):
        API = "api"
        UPLOAD = "upload"
        FORM = "form"

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="input_snapshots")
    source = models.CharField(max_length=16, choices=Source.choices)
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    declared_by_label = models.CharField(max_length=200)
    declared_at = models.DateTimeField(default=timezone.now)
    file_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)  # of the names, one per line, in order
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["stage", "-declared_at", "-pk"]
        indexes = [models.Index(fields=["stage", "-declared_at"], name="inputsnap_stage_at")]

    def __str__(self) -> str:
        return f"{self.file_count} inputs of {self.stage} ({self.declared_at:%Y-%m-%d %H:%M})"


class ExpectedInput(models.Model):
    """One input file of a snapshot. `position` keeps the declared order (a
    merge's order); run and subrun come from metadata or the file name."""

    snapshot = models.ForeignKey(InputSnapshot, on_delete=models.CASCADE, related_name="inputs")
    name = models.CharField(max_length=1024)
    position = models.PositiveIntegerField()
    run = models.BigIntegerField(null=True, blank=True)
    subrun = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["snapshot", "position"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "name"], name="expectedinput_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class NotificationKind(models.TextChoices):
    STAGE_DONE = "stage_done", "stage done"
    CAMPAIGN_DONE = "campaign_done", "campaign done"
    FAILURE_SPIKE = "failure_spike", "failure-rate spike"
    NEW_ERROR_CLASS = "new_error_class", "new error class"
    BLACK_HOLE = "black_hole", "node flagged as a black hole"
    HUNG_ATTEMPTS = "hung_attempts", "attempts flagged as hung"


class ReportSubscription(models.Model):
    """A user receives the weekly efficiency report of an experiment."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_subscriptions"
    )
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="report_subscriptions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "experiment"], name="reportsub_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} gets the weekly report of {self.experiment}"


class ReportDelivery(models.Model):
    """One weekly report sent to one subscriber: claimed before sending, so a
    second beat or a rerun of the command never mails the same week twice."""

    subscription = models.ForeignKey(
        ReportSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    week_start = models.DateField()
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "week_start"], name="reportdelivery_unique_week"
            ),
        ]

    def __str__(self) -> str:
        return f"report of week {self.week_start} to {self.subscription.user}"


class NotificationSubscription(models.Model):
    """What a user wants to hear about in one experiment, and how."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notification_subscriptions",
    )
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="notification_subscriptions"
    )
    kinds = models.JSONField(default=list, blank=True)  # NotificationKind values
    by_email = models.BooleanField(default=True)
    webhook_url = models.URLField(max_length=500, blank=True)
    # Sent as X-Prodmon-Signature: sha256=HMAC(secret, body), when set.
    webhook_secret = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "experiment"], name="notifysub_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.experiment}: {', '.join(self.kinds) or 'nothing'}"


class Notification(models.Model):
    """One message to one subscriber over one channel: the outbox row.

    Delivery claims a row with a conditional update (pending -> sending) so two
    workers never send it twice; a failed try goes back to pending with a
    later `next_try_at` (exponential backoff) until it runs out of tries.
    """

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        SUPPRESSED = "suppressed"  # over the rate limit: recorded, never sent

    subscription = models.ForeignKey(
        NotificationSubscription, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=500, blank=True)
    dedup_key = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    tries = models.PositiveSmallIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "channel", "dedup_key"],
                condition=~Q(dedup_key=""),
                name="notification_unique_dedup",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_try_at"],
                condition=Q(state="pending"),
                name="notification_due",
            ),
            models.Index(fields=["subscription", "kind", "created_at"], name="notification_rate"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.subscription.user} by {self.channel}: {self.state}"


class ProgressEvent(models.Model):
    """Something that happened once: a stage or campaign reached its target, a
    failure spike began. The unique key is the claim: whoever inserts it
    first notifies, everyone else sees IntegrityError and stays quiet."""

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="progress_events"
    )
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.CASCADE, related_name="progress_events"
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key
