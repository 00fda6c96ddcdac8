"""Writes of the progress app: expected inputs, subscriptions, the checks that
run after an attempt ends (stage and campaign done, failure spikes), and the
weekly report."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from prodmon.models import (
    Attempt,
    Campaign,
    ExpectedInput,
    Experiment,
    InputSnapshot,
    Membership,
    NotificationKind,
    NotificationSubscription,
    ProgressEvent,
    ReportDelivery,
    ReportSubscription,
    Stage,
)
from prodmon.progress import reports
from prodmon.progress.completeness import parse_run_subrun
from prodmon.progress.conf import setting
from prodmon.progress.notifications import absolute_url, notify
from prodmon.selectors import campaign_progress, stage_progress_list
from prodmon.services import audit_record

logger = logging.getLogger(__name__)

MAX_INPUTS = 1_000_000


class InputListError(ValueError):
    """An expected-input list that cannot be taken as it is."""


# --- expected inputs -------------------------------------------------------------------


def parse_input_list(text: str) -> list[str]:
    """One file name per line; blank lines and lines starting with # are skipped."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return names


@dataclass(frozen=True)
class InputEntry:
    name: str
    run: int | None = None
    subrun: int | None = None


def _entries(items: Iterable[str | dict | InputEntry]) -> tuple[list[InputEntry], int]:
    seen: set[str] = set()
    entries: list[InputEntry] = []
    repeated = 0
    for item in items:
        if isinstance(item, InputEntry):
            entry = item
        elif isinstance(item, str):
            entry = InputEntry(name=item.strip())
        elif isinstance(item, dict):
            run, subrun = item.get("run"), item.get("subrun")
            entry = InputEntry(
                name=str(item.get("name", "")).strip(),
                run=int(run) if run is not None else None,
                subrun=int(subrun) if subrun is not None else None,
            )
        else:
            raise InputListError(f"an input must be a name or an object, not {type(item).__name__}")
        if not entry.name:
            raise InputListError("an input has an empty name")
        if len(entry.name) > 1024:
            raise InputListError(f"input name longer than 1024 characters: {entry.name[:60]}…")
        if entry.name in seen:
            repeated += 1
            continue
        seen.add(entry.name)
        entries.append(entry)
    if len(entries) > MAX_INPUTS:
        raise InputListError(f"at most {MAX_INPUTS:,} inputs per declaration")
    return entries, repeated


def stage_inputs_declare(
    *,
    stage: Stage,
    items: Iterable[str | dict | InputEntry],
    source: str,
    actor: AbstractBaseUser | None,
    actor_label: str = "",
    note: str = "",
) -> InputSnapshot:
    """Declare the stage's expected inputs: a new, write-once snapshot that
    replaces the previous one as the stage's expectation. A name listed twice
    is kept once (the count is audited)."""
    entries, repeated = _entries(items)
    if not entries:
        raise InputListError("the list names no input")
    digest = hashlib.sha256("\n".join(e.name for e in entries).encode()).hexdigest()
    label = actor_label or (actor.get_username() if actor is not None else "system")
    user = actor if actor is not None and getattr(actor, "pk", None) else None
    with transaction.atomic():
        snapshot = InputSnapshot.objects.create(
            stage=stage,
            source=source,
            declared_by=user,
            declared_by_label=label,
            file_count=len(entries),
            sha256=digest,
            note=note[:200],
        )
        rows = []
        for position, e in enumerate(entries):
            run, subrun = e.run, e.subrun
            if run is None or subrun is None:
                parsed = parse_run_subrun(e.name)
                if parsed is not None:
                    run = parsed[0] if run is None else run
                    subrun = parsed[1] if subrun is None else subrun
            rows.append(
                ExpectedInput(
                    snapshot=snapshot, name=e.name, position=position, run=run, subrun=subrun
                )
            )
        ExpectedInput.objects.bulk_create(rows, batch_size=5000)
        audit_record(
            actor=user,
            actor_label=label,
            action="stage.inputs_declare",
            experiment=stage.campaign.experiment,
            target=stage,
            params={
                "source": source,
                "files": len(entries),
                "repeated_names_dropped": repeated,
                "sha256": digest,
                "snapshot": snapshot.pk,
            },
            result=f"{len(entries)} expected inputs",
        )
    return snapshot


# --- subscriptions ------------------------------------------------------------------------


def notification_subscription_set(
    *,
    user: AbstractBaseUser,
    experiment: Experiment,
    kinds: Iterable[str],
    by_email: bool,
    webhook_url: str = "",
    webhook_secret: str | None = None,
    is_active: bool = True,
) -> NotificationSubscription:
    kinds = sorted(set(kinds))
    unknown = set(kinds) - set(NotificationKind.values)
    if unknown:
        raise ValueError(f"unknown notification kinds: {', '.join(sorted(unknown))}")
    defaults = {
        "kinds": kinds,
        "by_email": by_email,
        "webhook_url": webhook_url,
        "is_active": is_active,
    }
    if webhook_secret is not None:
        defaults["webhook_secret"] = webhook_secret
    sub, _ = NotificationSubscription.objects.update_or_create(
        user=user, experiment=experiment, defaults=defaults
    )
    audit_record(
        actor=user,
        action="notifications.subscribe",
        experiment=experiment,
        target=sub,
        params={
            "kinds": kinds,
            "by_email": by_email,
            "webhook": bool(webhook_url),
            "active": is_active,
        },
        result="saved",
    )
    return sub


def report_subscription_set(
    *, user: AbstractBaseUser, experiment: Experiment, subscribed: bool
) -> ReportSubscription | None:
    existing = ReportSubscription.objects.filter(user=user, experiment=experiment).first()
    if subscribed and existing is None:
        existing = ReportSubscription.objects.create(user=user, experiment=experiment)
        result = "subscribed"
    elif not subscribed and existing is not None:
        existing.delete()
        existing = None
        result = "unsubscribed"
    else:
        return existing
    audit_record(
        actor=user,
        action="reports.weekly_subscribe",
        experiment=experiment,
        params={"subscribed": subscribed},
        result=result,
    )
    return existing


# --- after an attempt ends --------------------------------------------------------------


def _event_claim(
    *, key: str, kind: str, experiment: Experiment, stage_id: int | None, data: dict
) -> bool:
    """Insert the event row; False when it already exists (someone else fired it)."""
    try:
        with transaction.atomic():
            ProgressEvent.objects.create(
                key=key, kind=kind, experiment=experiment, stage_id=stage_id, data=data
            )
    except IntegrityError:
        return False
    audit_record(
        actor=None,
        action=f"progress.{kind}",
        experiment=experiment,
        params={"key": key, **data},
        result="notified",
    )
    return True


@dataclass
class Spike:
    window_attempts: int
    window_failed: int
    baseline_attempts: int
    baseline_failed: int

    @property
    def rate(self) -> float:
        return self.window_failed / self.window_attempts

    @property
    def baseline(self) -> float:
        return self.baseline_failed / self.baseline_attempts


def failure_spike(*, stage_id: int, now: dt.datetime | None = None) -> Spike | None:
    """A failure-rate spike: over the last window (PRODMON_SPIKE_WINDOW_MINUTES)
    at least PRODMON_SPIKE_MIN_ATTEMPTS attempts ended, and their failure rate
    is at least PRODMON_SPIKE_MIN_INCREASE above the baseline (the hours
    before the window) and 3 standard errors above it. No baseline, no spike."""
    now = now or timezone.now()
    window_start = now - dt.timedelta(minutes=float(setting("PRODMON_SPIKE_WINDOW_MINUTES")))
    base_start = window_start - dt.timedelta(hours=float(setting("PRODMON_SPIKE_BASELINE_HOURS")))
    minimum = int(setting("PRODMON_SPIKE_MIN_ATTEMPTS"))
    failed = Q(status=Attempt.Status.FAILED)
    in_window = Q(ended_at__gte=window_start)
    counts = Attempt.objects.filter(
        job__stage_id=stage_id,
        status__in=Attempt.ENDED,
        ended_at__gte=base_start,
        ended_at__lte=now,
    ).aggregate(
        wn=Count("id", filter=in_window),
        wf=Count("id", filter=in_window & failed),
        bn=Count("id", filter=~in_window),
        bf=Count("id", filter=~in_window & failed),
    )
    if counts["wn"] < minimum or counts["bn"] < minimum:
        return None
    spike = Spike(counts["wn"], counts["wf"], counts["bn"], counts["bf"])
    base = min(max(spike.baseline, 0.02), 0.98)  # a spotless baseline still has noise
    stderr = math.sqrt(base * (1 - base) / spike.window_attempts)
    rise = spike.rate - spike.baseline
    if rise >= float(setting("PRODMON_SPIKE_MIN_INCREASE")) and rise >= 3 * stderr:
        return spike
    return None


def _stage_url(stage: Stage) -> str:
    return reverse("progress-stage", args=[stage.pk])


def stage_after_end(*, stage_id: int, force_spike_check: bool = False) -> list[str]:
    """The checks that follow an attempt's end. Returns the events it fired."""
    stage = Stage.objects.select_related("campaign__experiment").filter(pk=stage_id).first()
    if stage is None:
        return []
    campaign = stage.campaign
    experiment = campaign.experiment
    fired = []
    progress = stage_progress_list(stages=[stage])[0]
    if progress.is_complete:
        if _event_claim(
            key=f"stage_done:{stage.pk}",
            kind=NotificationKind.STAGE_DONE,
            experiment=experiment,
            stage_id=stage.pk,
            data={"succeeded": progress.counts["succeeded"], "of": progress.denominator},
        ):
            fired.append(NotificationKind.STAGE_DONE)
            notify(
                kind=NotificationKind.STAGE_DONE,
                experiment=experiment,
                subject=f"{campaign.name}/{stage.name} is done",
                body=(
                    f"Stage {stage.name} of campaign {campaign.name} reached its target: "
                    f"{progress.counts['succeeded']:,} of {progress.denominator:,} jobs "
                    f"succeeded ({progress.pct_complete:.1f}%, target {stage.completion_pct}%)."
                ),
                url=_stage_url(stage),
                key=f"stage_done:{stage.pk}",
            )
        stages = campaign_progress(campaigns=[campaign])[campaign.pk]
        if (
            stages
            and all(p.is_complete for p in stages)
            and _event_claim(
                key=f"campaign_done:{campaign.pk}",
                kind=NotificationKind.CAMPAIGN_DONE,
                experiment=experiment,
                stage_id=None,
                data={"campaign": campaign.pk, "stages": len(stages)},
            )
        ):
            fired.append(NotificationKind.CAMPAIGN_DONE)
            notify(
                kind=NotificationKind.CAMPAIGN_DONE,
                experiment=experiment,
                subject=f"campaign {campaign.name} is done",
                body="\n".join(
                    f"{p.stage.name}: {p.pct_complete:.1f}% "
                    f"({p.counts['succeeded']:,}/{p.denominator:,})"
                    for p in stages
                ),
                url=campaign.get_absolute_url(),
                key=f"campaign_done:{campaign.pk}",
            )

    # The spike check reads a day of attempts: at most once a minute per stage.
    if force_spike_check or cache.add(f"progress:spike-check:{stage.pk}", 1, 60):
        fired += _spike_notify(stage)
    return fired


def _spike_notify(stage: Stage) -> list[str]:
    now = timezone.now()
    spike = failure_spike(stage_id=stage.pk, now=now)
    if spike is None:
        return []
    cooldown = dt.timedelta(hours=float(setting("PRODMON_SPIKE_COOLDOWN_HOURS")))
    if ProgressEvent.objects.filter(
        stage=stage, kind=NotificationKind.FAILURE_SPIKE, created_at__gte=now - cooldown
    ).exists():
        return []
    bucket = int(now.timestamp() // cooldown.total_seconds())
    key = f"failure_spike:{stage.pk}:{bucket}"
    experiment = stage.campaign.experiment
    if not _event_claim(
        key=key,
        kind=NotificationKind.FAILURE_SPIKE,
        experiment=experiment,
        stage_id=stage.pk,
        data={
            "window": [spike.window_failed, spike.window_attempts],
            "baseline": [spike.baseline_failed, spike.baseline_attempts],
        },
    ):
        return []
    minutes = float(setting("PRODMON_SPIKE_WINDOW_MINUTES"))
    notify(
        kind=NotificationKind.FAILURE_SPIKE,
        experiment=experiment,
        subject=(
            f"failure spike in {stage.campaign.name}/{stage.name}: "
            f"{spike.rate:.0%} failed (baseline {spike.baseline:.0%})"
        ),
        body=(
            f"In the last {minutes:.0f} minutes {spike.window_failed} of "
            f"{spike.window_attempts} attempts failed ({spike.rate:.0%}); before that "
            f"{spike.baseline_failed} of {spike.baseline_attempts} ({spike.baseline:.0%})."
        ),
        url=f"{reverse('job-list')}?stage={stage.pk}&state=failed",
        key=key,
    )
    return [NotificationKind.FAILURE_SPIKE]


def progress_sweep() -> int:
    """The periodic catch-up: checks of every stage of an active campaign (an
    end whose task was lost still gets its "done"), then due deliveries."""
    from prodmon.progress.notifications import notifications_deliver_due

    fired = 0
    for sid in Stage.objects.filter(campaign__state=Campaign.State.ACTIVE).values_list(
        "pk", flat=True
    ):
        try:
            fired += len(stage_after_end(stage_id=sid))
        except Exception:  # noqa: BLE001 - one stage's trouble must not stop the sweep
            logger.exception("progress checks of stage %s failed", sid)
    notifications_deliver_due()
    return fired


# --- weekly report ------------------------------------------------------------------------


def last_full_week(today: dt.date | None = None) -> dt.date:
    today = today or timezone.now().astimezone(dt.UTC).date()
    return today - dt.timedelta(days=today.weekday() + 7)


def weekly_report_message(
    *, experiment: Experiment, week_start: dt.date, to: list[str]
) -> EmailMultiAlternatives:
    since, until = reports.week_range(week_start)
    filters = reports.ReportFilters(
        experiment_ids=frozenset({experiment.pk}), since=since, until=until
    )
    by_campaign = reports.efficiency_report(filters=filters, by="campaign")
    by_site = reports.efficiency_report(filters=filters, by="site")
    by_stage = reports.efficiency_report(filters=filters, by="stage")
    link = absolute_url(
        f"{reverse('progress-reports')}?experiment={experiment.pk}"
        f"&since={since.date()}&until={(until - dt.timedelta(days=1)).date()}"
    )
    context = {
        "experiment": experiment,
        "since": since,
        "until": until - dt.timedelta(days=1),
        "by_campaign": by_campaign,
        "by_site": by_site,
        "link": link,
    }
    message = EmailMultiAlternatives(
        subject=f"[prodmon {experiment.name}] weekly efficiency report, week of {week_start}",
        body=render_to_string("progress/email/weekly_report.txt", context),
        to=to,
    )
    message.attach_alternative(
        render_to_string("progress/email/weekly_report.html", context), "text/html"
    )
    message.attach(
        f"prodmon-{experiment.name}-{week_start}-by-stage.csv",
        reports.report_csv(by_stage),
        "text/csv",
    )
    return message


def weekly_reports_send(*, week_start: dt.date | None = None) -> dict[str, int]:
    """Mail the report of one week (by default the last full week) to each
    subscriber. Each (subscriber, week) is sent once, however often this runs;
    a failed send is logged and tried again on the next run."""
    week_start = week_start or last_full_week()
    week_start = week_start - dt.timedelta(days=week_start.weekday())
    counts = {"sent": 0, "skipped": 0, "failed": 0}
    subs = ReportSubscription.objects.select_related("user", "experiment").order_by("pk")
    members = set(Membership.objects.values_list("user_id", "experiment_id"))
    for sub in subs:
        user = sub.user
        allowed = user.is_superuser or (user.pk, sub.experiment_id) in members
        if not (user.is_active and user.email and allowed):
            counts["skipped"] += 1
            continue
        delivery, _ = ReportDelivery.objects.get_or_create(subscription=sub, week_start=week_start)
        with transaction.atomic():
            delivery = ReportDelivery.objects.select_for_update().get(pk=delivery.pk)
            if delivery.sent_at is not None:
                counts["skipped"] += 1
                continue
            try:
                weekly_report_message(
                    experiment=sub.experiment, week_start=week_start, to=[user.email]
                ).send()
            except Exception as exc:  # noqa: BLE001 - one bad address must not stop the rest
                logger.exception("weekly report to %s failed", user.email)
                delivery.error = str(exc)[:2000]
                delivery.save(update_fields=["error"])
                counts["failed"] += 1
                continue
            delivery.sent_at = timezone.now()
            delivery.error = ""
            delivery.save(update_fields=["sent_at", "error"])
            counts["sent"] += 1
    audit_record(
        actor=None,
        action="reports.weekly_send",
        params={"week_start": week_start.isoformat(), **counts},
        result=f"{counts['sent']} sent",
    )
    return counts
