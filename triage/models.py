"""Error classification: error classes with a Sentry-like lifecycle, the one
classification of each failed attempt, shifters' signature rules, an
experiment's own exit codes and settings, success checks, and the drain3
template-miner state (kept in the database so clusters survive restarts)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from prodmon.models import Attempt, Campaign, Experiment, Node, Stage
from triage.classify import Source
from triage.kb import Category


class TriageSettings(models.Model):
    """Per-experiment triage settings. See triage/kb/__init__.py for families."""

    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="triage_settings"
    )
    code_families = models.JSONField(
        default=list,
        blank=True,
        help_text='Ordered exit-code families, e.g. ["art", "unix"]. Empty: the default '
        "(art, unix). Known: art, unix, cmssw, wmcore, panda.",
    )
    job_type_families = models.JSONField(
        default=dict,
        blank=True,
        help_text='Families per stage job_type prefix, e.g. {"cmsRun": ["cmssw", "wmcore", '
        '"unix"]}. Overrides the built-in hints.',
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"triage settings of {self.experiment}"

    def clean(self):
        from triage.kb import ALL_FAMILIES

        known = ", ".join(ALL_FAMILIES)
        if not isinstance(self.code_families, list) or any(
            f not in ALL_FAMILIES for f in self.code_families
        ):
            raise ValidationError({"code_families": f"Give a list of families from: {known}."})
        if not isinstance(self.job_type_families, dict) or any(
            not isinstance(v, list) or any(f not in ALL_FAMILIES for f in v)
            for v in self.job_type_families.values()
        ):
            raise ValidationError(
                {"job_type_families": f"Map job types to lists of families from: {known}."}
            )


class ErrorClass(models.Model):
    class Status(models.TextChoices):
        NEW = "new"
        ONGOING = "ongoing"
        RESOLVED = "resolved"
        IGNORED = "ignored"
        REGRESSED = "regressed"

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="error_classes"
    )
    # What the class stands for: "exit:art:65", "htcondor-hold:34:102",
    # "rule:builtin:cvmfs", "rule:17", "cluster:42", "check:missing-output", ...
    key = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.CHOICES)
    title = models.CharField(max_length=200)
    explanation = models.TextField(blank=True)
    category = models.CharField(max_length=16, choices=Category.CHOICES, default=Category.UNKNOWN)
    transient = models.BooleanField(
        default=False, help_text="A retry is likely to help (the cause is not in the job)."
    )
    suggested_action = models.TextField(blank=True)
    family = models.CharField(max_length=32, blank=True)
    code = models.IntegerField(null=True, blank=True)
    subcode = models.IntegerField(null=True, blank=True)
    template = models.TextField(blank=True)
    named_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    status_changed_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    times_seen = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_seen", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="errorclass_unique_key"),
        ]
        indexes = [
            models.Index(fields=["experiment", "last_seen"], name="errorclass_exp_last"),
            models.Index(fields=["experiment", "status"], name="errorclass_exp_status"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name}: {self.title}"

    def get_absolute_url(self) -> str:
        return reverse("triage-class-detail", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.NEW, self.Status.ONGOING, self.Status.REGRESSED)


class SignatureRule(models.Model):
    """A shifter's regex over the log tail that names a failure (see triage.classify)."""

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="signature_rules"
    )
    error_class = models.ForeignKey(ErrorClass, on_delete=models.PROTECT, related_name="rules")
    name = models.CharField(max_length=200)
    pattern = models.CharField(max_length=400)
    ignore_case = models.BooleanField(default=False)
    priority = models.IntegerField(
        default=100,
        validators=[MinValueValidator(0), MaxValueValidator(1000)],
        help_text="Higher wins. Built-in rules use 30-90; 100 beats them all.",
    )
    job_types = models.CharField(
        max_length=200, blank=True, help_text="Comma-separated stage job types; empty: any."
    )
    exit_codes = models.CharField(
        max_length=200, blank=True, help_text="Comma-separated exit codes; empty: any."
    )
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_timeout_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "pk"]
        indexes = [models.Index(fields=["experiment", "enabled"], name="rule_exp_enabled")]

    def __str__(self) -> str:
        return f"{self.name} (/{self.pattern}/)"

    def job_type_list(self) -> tuple[str, ...]:
        return tuple(t.strip().lower() for t in self.job_types.split(",") if t.strip())

    def exit_code_list(self) -> frozenset[int]:
        return frozenset(int(c) for c in self.exit_codes.split(",") if c.strip())


class AttemptClassification(models.Model):
    """The one error class of an ended, failed attempt, with the line that proves it.

    Campaign, stage, node, site, end time and wall time are copied from the
    attempt so that the summaries aggregate one table.
    """

    attempt = models.OneToOneField(Attempt, on_delete=models.CASCADE, related_name="classification")
    error_class = models.ForeignKey(
        ErrorClass, on_delete=models.CASCADE, related_name="classifications"
    )
    source = models.CharField(max_length=16, choices=Source.CHOICES)
    rule = models.ForeignKey(
        SignatureRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    line = models.TextField(blank=True)
    # 1-based, as the log viewer numbers lines; counted from the start of the
    # tail instead when the log was too long to count (line_is_absolute False).
    line_number = models.PositiveIntegerField(null=True, blank=True)
    line_is_absolute = models.BooleanField(default=True)
    tail_offset = models.BigIntegerField(default=0)
    log_offset = models.BigIntegerField(null=True, blank=True)
    span_start = models.PositiveIntegerField(null=True, blank=True)
    span_end = models.PositiveIntegerField(null=True, blank=True)
    excerpt = models.JSONField(default=list, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    site = models.CharField(max_length=128, blank=True)
    seen_at = models.DateTimeField()
    wall_s = models.FloatField(null=True, blank=True)
    cores = models.PositiveSmallIntegerField(default=1)
    classified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-seen_at", "-pk"]
        indexes = [
            models.Index(fields=["error_class", "seen_at"], name="cls_class_seen"),
            models.Index(fields=["experiment", "seen_at"], name="cls_exp_seen"),
            models.Index(fields=["campaign", "seen_at"], name="cls_campaign_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.attempt_id} -> {self.error_class_id}"


class CustomExitCode(models.Model):
    """An experiment's own exit code; it wins over every built-in family."""

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="custom_exit_codes"
    )
    family = models.SlugField(max_length=32, default="custom")
    code = models.IntegerField()
    title = models.CharField(max_length=200)
    explanation = models.TextField(blank=True)
    category = models.CharField(max_length=16, choices=Category.CHOICES, default=Category.UNKNOWN)
    transient = models.BooleanField(default=False)
    suggested_action = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["experiment", "code"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "code"], name="customcode_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name} {self.code}: {self.title}"


class SuccessCheck(models.Model):
    """A command that judges an attempt which exited 0.

    It runs without a shell, with the log tail on stdin and the outputs in
    environment variables (PRODMON_OUTPUTS as JSON, PRODMON_OUTPUT_NAMES,
    PRODMON_OUTPUT_SIZES, ...). A non-zero exit, or running past the timeout,
    fails the attempt. Commands run on the triage worker, so only staff may
    edit them (in the admin).
    """

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="success_checks"
    )
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.CASCADE, related_name="success_checks"
    )
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.CASCADE, related_name="success_checks"
    )
    name = models.CharField(max_length=200)
    command = models.TextField(help_text="argv, split like a shell would (no shell features).")
    timeout_s = models.PositiveSmallIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["experiment", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.campaign_id is None and self.stage_id is None:
            raise ValidationError("Attach the check to a campaign or a stage.")
        if self.stage_id and self.campaign_id and self.stage.campaign_id != self.campaign_id:
            raise ValidationError("The stage is not in that campaign.")
        scope = self.stage.campaign.experiment_id if self.stage_id else None
        scope = scope or (self.campaign.experiment_id if self.campaign_id else None)
        if scope is not None and scope != self.experiment_id:
            raise ValidationError("The campaign or stage belongs to another experiment.")
        import shlex

        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise ValidationError({"command": f"Cannot split the command: {exc}"}) from exc
        if not argv:
            raise ValidationError({"command": "Enter a command."})


class TemplateMinerState(models.Model):
    """drain3 state of one experiment's template miner (see triage.persistence)."""

    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="template_miner_state"
    )
    state = models.BinaryField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"template miner of {self.experiment} (v{self.version})"


# --- node health and liveness (issue 5) ------------------------------------------------


class NodeHealth(models.Model):
    """The health of one worker node as seen by one experiment's attempts.

    `state` is the detector's verdict (triage.nodehealth.detector) unless a
    shifter set it by hand (`manual`): a manual flag stays until a shifter
    clears it. `evidence_since` forgets older attempts, so a node that was
    cleared is not flagged again on the spell it already paid for.
    """

    class State(models.TextChoices):
        HEALTHY = "healthy"
        SUSPECT = "suspect"
        BLACK_HOLE = "black_hole", "black hole"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="health")
    state = models.CharField(max_length=16, choices=State.choices, default=State.HEALTHY)
    since = models.DateTimeField(default=timezone.now)
    manual = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    evidence_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node__site", "node__hostname"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "node"], name="nodehealth_unique"),
        ]
        indexes = [models.Index(fields=["experiment", "state"], name="nodehealth_exp_state")]

    def __str__(self) -> str:
        return f"{self.node} in {self.experiment}: {self.state}"


class NodeHealthEvent(models.Model):
    """One change of a node's state: the timeline on the node page."""

    health = models.ForeignKey(NodeHealth, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    before = models.CharField(max_length=16)
    after = models.CharField(max_length=16)
    manual = models.BooleanField(default=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.health.node} {self.before} -> {self.after} at {self.at:%Y-%m-%d %H:%M}"


class AttemptLiveness(models.Model):
    """What the liveness sweep knows of an open attempt.

    `progress_at` is when its log offset or CPU time last advanced; the sweep
    calls it hung when that stalls, lost when heartbeats stop. A late
    heartbeat revives a lost attempt (`revived_at`).
    """

    class State(models.TextChoices):
        OK = "ok"
        LOST = "lost"
        HUNG = "hung"

    attempt = models.OneToOneField(Attempt, on_delete=models.CASCADE, related_name="liveness")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    since = models.DateTimeField(default=timezone.now)
    revived_at = models.DateTimeField(null=True, blank=True)
    last_log_bytes = models.BigIntegerField(default=0)
    last_cpu_s = models.FloatField(null=True, blank=True)
    progress_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["campaign", "state"], name="liveness_campaign_state")]

    def __str__(self) -> str:
        return f"{self.attempt_id}: {self.state}"


class PartialFailure(models.Model):
    """One partial failure of multi-output work (triage.partial): a submission
    or an attempt, its kind (one of the six D0 skimming modes), and what must
    be redone. Written by triage.services.partial_failure_assess after every
    attempt end; `resolved_at` is set when a later good attempt (or, for a
    submission, good attempts of all its jobs) made the redo unnecessary."""

    class Kind(models.TextChoices):
        SUBMISSION_FAILED = "submission-failed", "whole submission failed"
        SUBMISSION_PARTIAL = "submission-partial", "submission partly failed"
        JOB_FAILED = "job-failed", "job failed totally"
        JOB_PARTIAL = "job-partial", "job failed partly"
        ENDED_EARLY = "ended-early", "job ended early"
        EMPTY_OUTPUT = "empty-output", "output with zero events"

    class Severity(models.TextChoices):
        FAILURE = "failure"
        WARNING = "warning"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    submission = models.ForeignKey(
        "prodmon.Submission", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    job = models.ForeignKey(
        "prodmon.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    attempt = models.ForeignKey(
        Attempt, null=True, blank=True, on_delete=models.CASCADE, related_name="partial_failures"
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    detail = models.CharField(max_length=300, blank=True)
    # What must be redone: input names, output names/patterns, or event ranges.
    redo_what = models.CharField(max_length=8, blank=True)
    redo = models.JSONField(default=list, blank=True)
    events_done = models.BigIntegerField(null=True, blank=True)
    events_expected = models.BigIntegerField(null=True, blank=True)
    detected_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-detected_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["attempt", "kind"],
                condition=models.Q(attempt__isnull=False),
                name="partial_attempt_kind",
            ),
            models.UniqueConstraint(
                fields=["submission", "kind"],
                condition=models.Q(attempt__isnull=True, submission__isnull=False),
                name="partial_submission_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "resolved_at"], name="partial_campaign_open"),
            models.Index(fields=["job"], name="partial_job"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.attempt_id or self.submission_id})"
