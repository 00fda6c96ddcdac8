"""The production model: experiments, campaigns, stages, submissions, jobs,
attempts, nodes and output files, plus memberships and the audit log.

State vocabularies are documented in README.md ("Production model").
"""

import hashlib
import json
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce, Greatest, Upper
from django.urls import reverse
from django.utils import timezone


class Role(models.IntegerChoices):
    """Ordered: a higher role can do everything a lower one can."""

    VIEWER = 10, "viewer"
    SHIFTER = 20, "shifter"
    MANAGER = 30, "production manager"
    ADMIN = 40, "admin"


class Experiment(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    # Where this experiment's jobs are submitted (prodmon.submission): "local",
    # "slurm" or "htcondor". Blank: PRODMON_SUBMISSION_BACKEND. A stage may override.
    submission_backend = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="memberships")
    role = models.PositiveSmallIntegerField(choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "experiment"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.experiment}: {self.get_role_display()}"


class Campaign(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        PAUSED = "paused"
        COMPLETED = "completed"
        ARCHIVED = "archived"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="campaigns")
    name = models.SlugField(max_length=128)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="campaign_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("campaign-detail", args=[self.pk])


class Stage(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        HELD = "held"
        FINISHING = "finishing"
        ABORTED = "aborted"
        COMPLETED = "completed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="stages")
    name = models.SlugField(max_length=128)
    order = models.PositiveIntegerField(default=0)
    depends_on = models.ManyToManyField(
        "self", symmetrical=False, related_name="dependents", blank=True
    )
    job_type = models.CharField(max_length=64, blank=True)
    expected_jobs = models.PositiveIntegerField(default=0)
    completion_pct = models.PositiveSmallIntegerField(
        default=95, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    # Submission: the backend (blank: the experiment's) and what each attempt asks for.
    submission_backend = models.CharField(max_length=16, blank=True)
    request_cores = models.PositiveSmallIntegerField(default=1)
    request_memory_mb = models.PositiveIntegerField(default=2000)
    request_walltime_s = models.PositiveIntegerField(default=8 * 3600)
    # Launch by itself once every parent stage reaches completion_pct.
    autolaunch = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["campaign", "order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="stage_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign}/{self.name}"


class ImmutableError(Exception):
    """Raised when code tries to change a config snapshot after it was taken."""


class ConfigSnapshot(models.Model):
    """Everything needed to rerun a stage's jobs exactly, years later.

    `files` is a list of {"name", "content", "sha256"}; `sha256` digests the
    whole snapshot in canonical JSON. Rows are write-once.
    """

    stage = models.OneToOneField(Stage, on_delete=models.CASCADE, related_name="config")
    command = models.TextField()
    release = models.CharField(max_length=200, blank=True)
    environment = models.JSONField(default=dict, blank=True)
    files = models.JSONField(default=list, blank=True)
    sha256 = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"config of {self.stage} ({self.sha256[:12]})"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ImmutableError("a config snapshot cannot be changed once taken")
        self.sha256 = self.compute_sha256()
        super().save(*args, **kwargs)

    def canonical(self) -> dict:
        return {
            "command": self.command,
            "release": self.release,
            "environment": self.environment,
            "files": self.files,
        }

    def compute_sha256(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class Submission(models.Model):
    class Kind(models.TextChoices):
        INITIAL = "initial"
        RETRY = "retry"
        RECOVERY = "recovery"

    class State(models.TextChoices):
        PENDING = "pending"
        SUBMITTED = "submitted"
        FAILED = "failed"
        CANCELLED = "cancelled"

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="submissions")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.INITIAL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SUBMITTED)
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    launched_at = models.DateTimeField(default=timezone.now)
    backend = models.CharField(max_length=32, default="external")
    external_id = models.CharField(max_length=128, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    command = models.TextField(blank=True)
    output = models.TextField(blank=True)
    # The operator request (retry, recovery, launch) that made this submission.
    action = models.ForeignKey(
        "BulkAction", null=True, blank=True, on_delete=models.SET_NULL, related_name="submissions"
    )

    class Meta:
        ordering = ["-launched_at"]

    def __str__(self) -> str:
        return f"{self.kind} submission {self.pk} of {self.stage}"

    def get_absolute_url(self) -> str:
        return reverse("submission-detail", args=[self.pk])


class Node(models.Model):
    """A worker node. Properties are what its jobs reported (cvmfs, os, cores)."""

    hostname = models.CharField(max_length=255, unique=True)
    site = models.CharField(max_length=128, db_index=True, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["site", "hostname"]

    def __str__(self) -> str:
        return self.hostname


class Job(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="jobs")
    key = models.CharField(max_length=512)
    expected_outputs = models.JSONField(default=list, blank=True)
    events_expected = models.BigIntegerField(null=True, blank=True)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    good_attempt = models.ForeignKey(
        "Attempt", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    duplicate_completions = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The latest attempt (highest number) and its facts, for the job table: kept
    # by database triggers on the attempt table (migration 0005), so every
    # writer (ingest, submission, actions) keeps them without calling anything.
    last_attempt = models.ForeignKey(
        "Attempt", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # db_default too: raw inserts (COPY, a hand-written ingest upsert) may omit it.
    last_site = models.CharField(max_length=128, blank=True, default="", db_default="")
    # Coalesce(ended, last heartbeat, started, created) of the latest attempt.
    last_activity_at = models.DateTimeField(null=True, blank=True)
    # What the job table sorts by: the later of the job's own update and its
    # latest attempt's activity. Computed by the database, indexed.
    last_update = models.GeneratedField(
        expression=Greatest("updated_at", Coalesce("last_activity_at", "updated_at")),
        output_field=models.DateTimeField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["stage", "key"]
        constraints = [
            models.UniqueConstraint(fields=["stage", "key"], name="job_unique_key"),
        ]
        indexes = [
            models.Index(fields=["stage", "state"], name="job_stage_state"),
            # The job table: newest first, alone or under its common filters.
            models.Index(fields=["last_update", "id"], name="job_last_update"),
            models.Index(fields=["state", "last_update"], name="job_state_update"),
            models.Index(fields=["stage", "last_update"], name="job_stage_update"),
            models.Index(Upper("last_site"), "last_update", name="job_site_update"),
            models.Index(fields=["key", "id"], name="job_key"),
        ]

    def __str__(self) -> str:
        return f"{self.stage}/{self.key}"

    def get_absolute_url(self) -> str:
        return reverse("job-detail", args=[self.pk])


class Attempt(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    ENDED = (Status.SUCCEEDED, Status.FAILED)

    uid = models.UUIDField(unique=True, default=uuid.uuid4)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    submission = models.ForeignKey(
        Submission, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts"
    )
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts"
    )
    batch_id = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.PositiveSmallIntegerField(null=True, blank=True)
    reported_success = models.BooleanField(null=True, blank=True)
    cores = models.PositiveSmallIntegerField(default=1)
    wall_s = models.FloatField(null=True, blank=True)
    cpu_s = models.FloatField(null=True, blank=True)
    cpu_efficiency = models.FloatField(null=True, blank=True)
    peak_rss_bytes = models.BigIntegerField(null=True, blank=True)
    disk_bytes = models.BigIntegerField(null=True, blank=True)
    events_processed = models.BigIntegerField(null=True, blank=True)
    output_bytes = models.BigIntegerField(null=True, blank=True)
    log_bytes = models.BigIntegerField(default=0)
    is_duplicate_completion = models.BooleanField(default=False)
    # What the submission layer asked the batch system for (null: not submitted by prodmon).
    request_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    request_walltime_s = models.PositiveIntegerField(null=True, blank=True)
    # What the batch system last said about it (Slurm JobState, HTCondor event),
    # and an HTCondor hold's reason: data for triage to classify.
    batch_state = models.CharField(max_length=32, blank=True)
    hold_reason_code = models.IntegerField(null=True, blank=True)
    hold_reason_subcode = models.IntegerField(null=True, blank=True)
    hold_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="attempt_unique_number"),
            # No double submission: at most one open attempt per job among those
            # prodmon's own submission layer queued (they carry their submission).
            # Attempts the ingest path creates for runs it has not seen (a batch
            # system's resubmission) have no submission and are never refused:
            # ingest must not lose data. See docs/actions.md.
            models.UniqueConstraint(
                fields=["job"],
                condition=Q(status__in=["queued", "running"], submission__isnull=False),
                name="attempt_one_open_submitted",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "last_heartbeat_at"], name="attempt_status_hb"),
            models.Index(fields=["node", "ended_at"], name="attempt_node_ended"),
            models.Index(
                fields=["job"],
                condition=Q(status__in=["queued", "running"]),
                name="attempt_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} #{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("attempt-detail", args=[self.uid])

    @property
    def is_ended(self) -> bool:
        return self.status in self.ENDED


class OutputFile(models.Model):
    """An output of an attempt. Campaign, stage and job are kept on the row so a
    file catalog or transfer service can trace a file to the task that made it."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="outputs")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="outputs")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="outputs")
    name = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    checksum = models.CharField(max_length=140, blank=True)
    events = models.BigIntegerField(null=True, blank=True)
    parents = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["attempt", "name"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "name"], name="output_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class AuditEntry(models.Model):
    """Who did what, when, with what parameters, and how it ended."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=200)
    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit"
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"


class StageProgressSample(models.Model):
    """Job counts of a stage at one moment: the history behind percent-complete
    over time. Written by a Celery task after attempt ends and by the sweep."""

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="progress_samples")
    at = models.DateTimeField(default=timezone.now)
    pending = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    running = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["stage", "at"]
        indexes = [models.Index(fields=["stage", "at"], name="progress_stage_at")]

    def __str__(self) -> str:
        return f"{self.stage} at {self.at:%Y-%m-%d %H:%M}"
