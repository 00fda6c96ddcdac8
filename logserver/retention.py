"""Log retention: tails (chunks and their index) are kept N days and full logs
M days, per experiment (LogRetentionPolicy, defaults from settings).

A job that is still open in triage never loses its logs: triage decides
(triage.selectors.jobs_open_in_triage: a failure in a class that is new,
ongoing or regressed, or a failed job that triage has not classified yet). A
job that has not ended (pending, queued, running) keeps its logs too. Once its
failures sit in resolved or ignored classes, a job's logs age out like any other.
"""

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from logserver.conf import setting
from logserver.fulllog import full_log_delete
from logserver.index import get_log_index
from logserver.indexing import attempt_labels
from logserver.models import (
    FullLog,
    LogChunk,
    LogIndexCursor,
    LogLineMark,
    LogRetentionPolicy,
)
from prodmon.models import Attempt, Experiment, Job

logger = logging.getLogger(__name__)
BATCH = 200


ENDED_STATES = (Job.State.SUCCEEDED, Job.State.FAILED)


def _open_job_q(experiment: Experiment, prefix: str = "job__") -> Q:
    """Jobs whose logs retention keeps: open in triage, or not ended."""
    from triage.selectors import jobs_open_in_triage

    return Q(**{f"{prefix}id__in": jobs_open_in_triage(experiment_id=experiment.pk)}) | ~Q(
        **{f"{prefix}state__in": ENDED_STATES}
    )


@dataclass(frozen=True)
class RetentionDays:
    tail_days: int
    full_log_days: int


def retention_days(*, experiment: Experiment) -> RetentionDays:
    policy = LogRetentionPolicy.objects.filter(experiment=experiment).first()
    tail = policy.tail_days if policy and policy.tail_days is not None else None
    full = policy.full_log_days if policy and policy.full_log_days is not None else None
    return RetentionDays(
        tail_days=tail if tail is not None else int(setting("PRODMON_LOG_TAIL_RETENTION_DAYS")),
        full_log_days=full if full is not None else int(setting("PRODMON_FULL_LOG_RETENTION_DAYS")),
    )


@dataclass
class ExperimentRetention:
    experiment: str
    tail_days: int
    full_log_days: int
    tails: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    full_logs: int = 0
    full_log_bytes: int = 0
    tails_kept_open: int = 0
    full_logs_kept_open: int = 0


@dataclass
class RetentionReport:
    dry_run: bool
    experiments: list[ExperimentRetention] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(e, name) for e in self.experiments)


def _expired_tails(experiment: Experiment, cutoff: dt.datetime) -> QuerySet[Attempt]:
    has_chunks = Exists(LogChunk.objects.filter(attempt_id=OuterRef("pk")))
    return (
        Attempt.objects.filter(job__stage__campaign__experiment=experiment)
        .annotate(
            last_activity=Coalesce("ended_at", "last_heartbeat_at", "started_at", "created_at")
        )
        .filter(last_activity__lt=cutoff)
        .filter(has_chunks)
    )


def _purge_tails(attempt_ids: list[int], now: dt.datetime) -> None:
    index = get_log_index()
    attempts = Attempt.objects.select_related("job__stage__campaign__experiment", "node").filter(
        pk__in=attempt_ids
    )
    with transaction.atomic():
        index.delete_attempts([attempt_labels(a) for a in attempts])
        LogChunk.objects.filter(attempt_id__in=attempt_ids).delete()
        LogLineMark.objects.filter(attempt_id__in=attempt_ids).delete()
        # Keep the cursor, marked purged, so the reconciler does not index the void.
        LogIndexCursor.objects.bulk_create(
            [
                LogIndexCursor(attempt=a, experiment_id=a.job.stage.campaign.experiment_id)
                for a in attempts
            ],
            ignore_conflicts=True,
        )
        LogIndexCursor.objects.filter(attempt_id__in=attempt_ids).update(
            purged_at=now, rewind_points=[], finished=True
        )


def logs_retention_enforce(
    *, now: dt.datetime | None = None, dry_run: bool = False
) -> RetentionReport:
    """Remove expired tails and full logs of closed jobs. With dry_run, only count."""
    now = now or timezone.now()
    report = RetentionReport(dry_run=dry_run)
    for experiment in Experiment.objects.order_by("name"):
        days = retention_days(experiment=experiment)
        result = ExperimentRetention(
            experiment=experiment.name,
            tail_days=days.tail_days,
            full_log_days=days.full_log_days,
        )
        report.experiments.append(result)

        open_q = _open_job_q(experiment)
        expired = _expired_tails(experiment, now - dt.timedelta(days=days.tail_days))
        result.tails_kept_open = expired.filter(open_q).count()
        closed_tails = expired.exclude(open_q)
        ids = list(closed_tails.values_list("pk", flat=True))
        result.tails = len(ids)
        stats = LogChunk.objects.filter(attempt_id__in=closed_tails.values("pk")).aggregate(
            n=Count("id"), size=Coalesce(Sum("length"), 0)
        )
        result.chunks, result.chunk_bytes = stats["n"], stats["size"]
        if not dry_run:
            for i in range(0, len(ids), BATCH):
                _purge_tails(ids[i : i + BATCH], now)

        full_cutoff = now - dt.timedelta(days=days.full_log_days)
        old = FullLog.objects.filter(
            attempt__job__stage__campaign__experiment=experiment, uploaded_at__lt=full_cutoff
        )
        result.full_logs_kept_open = old.filter(_open_job_q(experiment, "attempt__job__")).count()
        closed = old.exclude(_open_job_q(experiment, "attempt__job__"))
        result.full_logs = closed.count()
        result.full_log_bytes = closed.aggregate(s=Coalesce(Sum("size"), 0))["s"]
        if not dry_run:
            for full_log in closed.iterator():
                full_log_delete(full_log=full_log)
        if result.tails or result.full_logs:
            logger.info(
                "retention %s%s: %d tails (%d bytes), %d full logs (%d bytes) removed",
                experiment.name,
                " (dry run)" if dry_run else "",
                result.tails,
                result.chunk_bytes,
                result.full_logs,
                result.full_log_bytes,
            )
    return report
