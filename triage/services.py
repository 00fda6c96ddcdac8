"""Writes for triage: classify attempts, keep error classes' lifecycle, and the
shifter actions (rules, naming, status), each audited.

Flow of `attempt_classify` (run by triage.tasks.attempt_classify_task after
every applied end event, and by the sweep):

- a succeeded attempt is checked (declared outputs, sizes, checksums, the
  stage's or campaign's check command); a failed check turns it into a
  failure through prodmon.services.attempt_fail_post_check and classifies it
  under the check's own class;
- a failed attempt gets its verdict from triage.classify (rules, hold code,
  exit code, cluster, ...), which `_record` stores as the attempt's one
  AttemptClassification. Re-running is idempotent: the same verdict changes
  nothing, a different one moves the attempt and fixes both classes' counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Min, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.urls import reverse
from django.utils import timezone

from prodmon import services as production
from prodmon.models import Attempt, Campaign, Experiment, OutputFile
from triage import checks, persistence, selectors
from triage.classify import ClassSpec, Source, Verdict, classify_failure
from triage.errorlines import EXCERPT_AFTER, EXCERPT_BEFORE
from triage.kb import Category
from triage.models import (
    AttemptClassification,
    CustomExitCode,
    ErrorClass,
    SignatureRule,
    SuccessCheck,
)
from triage.regexguard import MAX_LINE_CHARS, compile_user_pattern

logger = logging.getLogger(__name__)

# A class stays "new" this long after it was first seen, and "regressed" this
# long after it came back; then it counts as "ongoing" (as in Sentry).
NEW_PERIOD = dt.timedelta(days=7)
_POST_CHECK_KEYS = {spec.key for spec in checks.CHECK_CLASSES.values()}
MAX_EXCERPT_LINE = 500


def _rule_budget() -> float:
    return float(getattr(settings, "TRIAGE_RULE_BUDGET_SECONDS", 0.5))


# --- classification ---------------------------------------------------------------


def attempt_classify(*, attempt_id: int) -> AttemptClassification | None:
    """Classify an ended attempt (see the module docstring). None when nothing to do."""
    attempt = (
        Attempt.objects.select_related("job__stage__campaign__experiment", "node")
        .filter(pk=attempt_id)
        .first()
    )
    if attempt is None or not attempt.is_ended:
        return None
    if attempt.status == Attempt.Status.SUCCEEDED:
        return _check_success(attempt)

    existing = (
        AttemptClassification.objects.filter(attempt=attempt).select_related("error_class").first()
    )
    if existing is not None and existing.error_class.key in _POST_CHECK_KEYS:
        return existing  # we failed it after a check: that verdict stands

    tail = selectors.attempt_tail(attempt=attempt)
    facts = selectors.failure_facts(attempt=attempt)
    experiment_id = attempt.job.stage.campaign.experiment_id
    verdict = classify_failure(
        lines=tail.lines,
        facts=facts,
        rules=selectors.compiled_rules(experiment_id=experiment_id),
        cluster=lambda line: persistence.cluster_line(experiment_id=experiment_id, line=line),
        budget_seconds=_rule_budget(),
    )
    if verdict.timed_out_rules:
        _note_slow_rules(verdict.timed_out_rules, attempt)
    return _record(attempt=attempt, verdict=verdict, tail=tail)


def _check_success(attempt: Attempt) -> AttemptClassification | None:
    failure = _success_failure(attempt)
    if failure is None:
        return None
    production.attempt_fail_post_check(attempt_id=attempt.pk, reason=failure.reason)
    attempt.refresh_from_db()
    if attempt.status != Attempt.Status.FAILED:
        return None
    verdict = Verdict(spec=checks.CHECK_CLASSES[failure.kind], detail=failure.reason[:300])
    return _record(attempt=attempt, verdict=verdict, tail=None, line_text=failure.reason)


def _success_failure(attempt: Attempt) -> checks.CheckFailure | None:
    job = attempt.job
    outputs = [
        checks.OutputFact(name=o.name, size=o.size, checksum=o.checksum)
        for o in OutputFile.objects.filter(attempt=attempt).only("name", "size", "checksum")
    ]
    failure = checks.check_outputs(job.expected_outputs, outputs)
    if failure is not None:
        return failure
    failure = checks.check_events(processed=attempt.events_processed, expected=job.events_expected)
    if failure is not None:
        return failure
    stage = job.stage
    commands = SuccessCheck.objects.filter(enabled=True, experiment_id=stage.campaign.experiment_id)
    commands = commands.filter(stage=stage) | commands.filter(
        campaign_id=stage.campaign_id, stage__isnull=True
    )
    commands = list(commands.order_by("pk"))
    if not commands:
        return None
    tail = selectors.attempt_tail(attempt=attempt)
    env = checks.check_environment(
        attempt_facts={
            "attempt_uid": attempt.uid,
            "job_key": job.key,
            "campaign": stage.campaign.name,
            "stage": stage.name,
            "experiment": stage.campaign.experiment.name,
            "exit_code": attempt.exit_code,
            "events_processed": attempt.events_processed,
            "wall_s": attempt.wall_s,
        },
        outputs=outputs,
    )
    stdin = (tail.text + "\n").encode("utf-8", "replace") if tail.lines else b""
    for check in commands:
        try:
            failure = checks.run_check_command(
                check.command, stdin=stdin, env=env, timeout_s=check.timeout_s
            )
        except (OSError, ValueError) as exc:
            # A check that cannot start is broken configuration, not a bad
            # attempt: say so loudly and do not fail good work for it.
            logger.error("success check %s (%s) could not run: %s", check.pk, check.name, exc)
            continue
        if failure is not None:
            return checks.CheckFailure(failure.kind, f"{check.name}: {failure.reason}")
    return None


def _note_slow_rules(keys: tuple[str, ...], attempt: Attempt) -> None:
    ids = [int(k.split(":")[1]) for k in keys if k.split(":")[1].isdigit()]
    if ids:
        SignatureRule.objects.filter(pk__in=ids).update(last_timeout_at=timezone.now())
    logger.warning("rules %s ran out of time on attempt %s", ", ".join(keys), attempt.uid)


def _notify_new_class(error_class: ErrorClass) -> None:
    """Tell the experiment's subscribers, once the class is committed."""
    from prodmon.progress.notifications import notify

    def send():
        notify(
            kind="new_error_class",
            experiment=error_class.experiment_id,
            subject=f"New error class: {error_class.title}",
            body=error_class.explanation or error_class.key,
            url=reverse("triage-class-detail", args=[error_class.pk]),
            key=f"error-class:{error_class.pk}",
        )

    transaction.on_commit(send)


def _notify_black_hole(health, *, reason: str) -> None:
    from prodmon.progress.notifications import notify

    experiment_id, node_id, hostname = health.experiment_id, health.node_id, str(health.node)

    def send():
        notify(
            kind="black_hole",
            experiment=experiment_id,
            subject=f"Node {hostname} flagged as a black hole",
            body=reason,
            url=reverse("health-node-detail", args=[health.pk]),
            key=f"black-hole:{experiment_id}:{node_id}:{health.since:%Y%m%d%H%M}",
        )

    transaction.on_commit(send)


def error_class_for(*, experiment: Experiment, spec: ClassSpec) -> ErrorClass:
    """The experiment's class for a spec, created on first sight."""
    found = ErrorClass.objects.filter(experiment=experiment, key=spec.key).first()
    if found is None:
        try:
            with transaction.atomic():
                found = ErrorClass.objects.create(
                    experiment=experiment,
                    key=spec.key,
                    source=spec.source,
                    title=spec.title[:200],
                    explanation=spec.explanation,
                    category=spec.category,
                    transient=spec.transient,
                    suggested_action=spec.action,
                    family=spec.family,
                    code=spec.code,
                    subcode=spec.subcode,
                    template=spec.template,
                )
        except IntegrityError:
            found = ErrorClass.objects.get(experiment=experiment, key=spec.key)
        else:
            _notify_new_class(found)
    elif spec.template and found.template != spec.template and found.source == Source.CLUSTER:
        # Drain generalized the template; follow it unless a shifter named the class.
        found.template = spec.template
        fields = ["template"]
        if found.named_by_id is None:
            found.title = spec.title[:200]
            fields.append("title")
        found.save(update_fields=fields)
    while found.merged_into_id is not None:
        found = found.merged_into
    return found


def _line_fields(
    attempt: Attempt, verdict: Verdict, tail: selectors.Tail | None, line_text: str
) -> dict:
    fields = {
        "line": line_text[:MAX_LINE_CHARS],
        "line_number": None,
        "line_is_absolute": True,
        "log_offset": None,
        "tail_offset": 0,
        "span_start": None,
        "span_end": None,
        "excerpt": [],
    }
    if tail is None or verdict.line_index is None or not tail.lines:
        return fields
    index = verdict.line_index
    start, stop = max(0, index - EXCERPT_BEFORE), min(len(tail.lines), index + EXCERPT_AFTER + 1)
    before = selectors.lines_before(attempt=attempt, offset=tail.start) if tail.start else 0
    base = 1 + (before or 0)
    fields.update(
        line=tail.lines[index][:MAX_LINE_CHARS],
        line_number=index + base,
        line_is_absolute=before is not None,
        log_offset=tail.offsets[index],
        tail_offset=tail.start,
        excerpt=[[i + base, tail.lines[i][:MAX_EXCERPT_LINE]] for i in range(start, stop)],
    )
    if verdict.span is not None and verdict.span[1] <= MAX_LINE_CHARS:
        fields.update(span_start=verdict.span[0], span_end=verdict.span[1])
    return fields


def _record(
    *,
    attempt: Attempt,
    verdict: Verdict,
    tail: selectors.Tail | None,
    line_text: str = "",
) -> AttemptClassification:
    stage = attempt.job.stage
    campaign = stage.campaign
    experiment = campaign.experiment
    class_id = verdict.rule.class_id if verdict.rule is not None else 0
    if class_id:
        error_class = ErrorClass.objects.get(pk=class_id)
        while error_class.merged_into_id is not None:
            error_class = error_class.merged_into
    else:
        error_class = error_class_for(experiment=experiment, spec=verdict.spec)
    seen_at = attempt.ended_at or timezone.now()
    values = {
        "error_class": error_class,
        "source": verdict.source if verdict.rule is None else Source.RULE,
        "rule_id": verdict.rule.rule_id if class_id else None,
        "detail": verdict.detail[:300],
        "experiment": experiment,
        "campaign": campaign,
        "stage": stage,
        "node": attempt.node,
        "site": attempt.node.site if attempt.node else "",
        "seen_at": seen_at,
        "wall_s": attempt.wall_s,
        "cores": attempt.cores or 1,
        **_line_fields(attempt, verdict, tail, line_text),
    }
    with transaction.atomic():
        row = AttemptClassification.objects.select_for_update().filter(attempt=attempt).first()
        old_class_id = row.error_class_id if row is not None else None
        if row is None:
            try:
                with transaction.atomic():
                    row = AttemptClassification.objects.create(attempt=attempt, **values)
            except IntegrityError:
                row = AttemptClassification.objects.select_for_update().get(attempt=attempt)
                old_class_id = row.error_class_id
        if row.error_class_id != error_class.pk or old_class_id is not None:
            for name, value in values.items():
                setattr(row, name, value)
            row.save()
        if old_class_id != error_class.pk:
            _count_occurrence(error_class=error_class, attempt=attempt, seen_at=seen_at)
            if old_class_id is not None:
                _recount(old_class_id)
            error_class.refresh_from_db()
    if verdict.cluster is not None and verdict.cluster.merged:
        _merge_cluster_classes(
            experiment=experiment, target=error_class, ids=verdict.cluster.merged
        )
    return row


def _count_occurrence(*, error_class: ErrorClass, attempt: Attempt, seen_at: dt.datetime) -> None:
    at = Value(seen_at)
    ErrorClass.objects.filter(pk=error_class.pk).update(
        times_seen=F("times_seen") + 1,
        first_seen=Least(Coalesce(F("first_seen"), at), at),
        last_seen=Greatest(Coalesce(F("last_seen"), at), at),
    )
    now = timezone.now()
    regressed = ErrorClass.objects.filter(
        pk=error_class.pk, status=ErrorClass.Status.RESOLVED, resolved_at__lt=seen_at
    ).update(status=ErrorClass.Status.REGRESSED, status_changed_at=now)
    if regressed:
        production.audit_record(
            actor=None,
            action="error_class.regressed",
            experiment=error_class.experiment,
            target=error_class,
            params={"attempt": str(attempt.uid), "seen_at": seen_at.isoformat()},
            result="regressed",
        )
    ErrorClass.objects.filter(
        pk=error_class.pk, status=ErrorClass.Status.NEW, first_seen__lt=now - NEW_PERIOD
    ).update(status=ErrorClass.Status.ONGOING, status_changed_at=now)


def _recount(class_id: int) -> None:
    stats = AttemptClassification.objects.filter(error_class_id=class_id).aggregate(
        n=Count("id"), first=Min("seen_at"), last=Max("seen_at")
    )
    ErrorClass.objects.filter(pk=class_id).update(
        times_seen=stats["n"] or 0, first_seen=stats["first"], last_seen=stats["last"]
    )


def _merge_cluster_classes(*, experiment: Experiment, target: ErrorClass, ids) -> None:
    keys = [f"cluster:{i}" for i in ids]
    for source in ErrorClass.objects.filter(
        experiment=experiment, key__in=keys, merged_into__isnull=True, source=Source.CLUSTER
    ).exclude(pk=target.pk):
        error_class_merge(source=source, target=target, actor=None)


def error_class_merge(
    *, source: ErrorClass, target: ErrorClass, actor: AbstractBaseUser | None
) -> ErrorClass:
    """Move every attempt of `source` into `target`; `source` remains as a pointer."""
    with transaction.atomic():
        moved = AttemptClassification.objects.filter(error_class=source).update(error_class=target)
        ErrorClass.objects.filter(pk=source.pk).update(merged_into=target, times_seen=0)
        _recount(target.pk)
        production.audit_record(
            actor=actor,
            action="error_class.merge",
            experiment=target.experiment,
            target=target,
            params={"merged": source.pk, "merged_key": source.key, "attempts": moved},
            result="merged",
        )
    return target


def error_class_lifecycle_sweep(*, now: dt.datetime | None = None) -> int:
    """new -> ongoing after NEW_PERIOD; regressed -> ongoing NEW_PERIOD after regressing."""
    now = now or timezone.now()
    cutoff = now - NEW_PERIOD
    changed = ErrorClass.objects.filter(status=ErrorClass.Status.NEW, first_seen__lt=cutoff).update(
        status=ErrorClass.Status.ONGOING, status_changed_at=now
    )
    changed += ErrorClass.objects.filter(
        status=ErrorClass.Status.REGRESSED, status_changed_at__lt=cutoff
    ).update(status=ErrorClass.Status.ONGOING, status_changed_at=now)
    return changed


def attempt_classify_sweep(*, since: dt.datetime | None = None, limit: int = 1000) -> int:
    """Classify ended failures that have no classification (e.g. the broker was down)."""
    since = since or timezone.now() - dt.timedelta(days=1)
    done = 0
    for attempt_id in selectors.unclassified_failed_attempt_ids(since=since, limit=limit):
        try:
            if attempt_classify(attempt_id=attempt_id) is not None:
                done += 1
            partial_failure_assess(attempt_id=attempt_id)
        except Exception:  # noqa: BLE001 - one bad attempt must not stop the sweep
            logger.exception("could not classify attempt %s", attempt_id)
    return done


# --- shifter actions (all audited) ----------------------------------------------------


def error_class_set_status(
    *, error_class: ErrorClass, status: str, actor: AbstractBaseUser
) -> ErrorClass:
    if status not in ErrorClass.Status.values:
        raise ValueError(f"unknown status {status!r}")
    before = error_class.status
    now = timezone.now()
    error_class.status = status
    error_class.status_changed_at = now
    fields = ["status", "status_changed_at"]
    if status == ErrorClass.Status.RESOLVED:
        error_class.resolved_at = now
        fields.append("resolved_at")
    error_class.save(update_fields=fields)
    production.audit_record(
        actor=actor,
        action="error_class.status",
        experiment=error_class.experiment,
        target=error_class,
        params={"from": before, "to": status},
        result=status,
    )
    return error_class


CLASS_TEXT_FIELDS = ("title", "explanation", "category", "transient", "suggested_action")


def error_class_update(*, error_class: ErrorClass, actor: AbstractBaseUser, **data) -> ErrorClass:
    """Rename or re-describe a class (e.g. name a cluster)."""
    changed = {}
    for name in CLASS_TEXT_FIELDS:
        if name in data and getattr(error_class, name) != data[name]:
            changed[name] = [getattr(error_class, name), data[name]]
            setattr(error_class, name, data[name])
    if data.get("category") and data["category"] not in Category.VALUES:
        raise ValueError(f"unknown category {data['category']!r}")
    if changed:
        error_class.named_by = actor if actor.is_authenticated else None
        error_class.save(update_fields=[*changed, "named_by"])
    production.audit_record(
        actor=actor,
        action="error_class.update",
        experiment=error_class.experiment,
        target=error_class,
        params={k: [str(v[0])[:200], str(v[1])[:200]] for k, v in changed.items()},
        result="updated" if changed else "unchanged",
    )
    return error_class


RULE_FIELDS = ("name", "pattern", "ignore_case", "priority", "job_types", "exit_codes", "enabled")


def rule_create(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser,
    rule_data: dict,
    class_data: dict,
    error_class: ErrorClass | None = None,
) -> SignatureRule:
    """Create a rule and the class it names (or attach it to `error_class`,
    as when a cluster is promoted)."""
    compile_user_pattern(rule_data["pattern"], ignore_case=rule_data.get("ignore_case", False))
    with transaction.atomic():
        promoted = error_class is not None
        if error_class is None:
            error_class = ErrorClass.objects.create(
                experiment=experiment,
                key=f"rule:new:{uuid.uuid4().hex}",
                source=Source.RULE,
                title=class_data.get("title") or rule_data["name"],
                named_by=actor,
            )
        rule = SignatureRule.objects.create(
            experiment=experiment,
            error_class=error_class,
            created_by=actor,
            updated_by=actor,
            **{k: rule_data[k] for k in RULE_FIELDS if k in rule_data},
        )
        if not promoted:
            error_class.key = f"rule:{rule.pk}"
        else:
            error_class.source = Source.RULE
        for name in CLASS_TEXT_FIELDS:
            if name in class_data:
                setattr(error_class, name, class_data[name])
        error_class.named_by = actor
        error_class.save()
        production.audit_record(
            actor=actor,
            action="rule.promote" if promoted else "rule.create",
            experiment=experiment,
            target=rule,
            params={
                **{k: rule_data.get(k) for k in RULE_FIELDS},
                "error_class": error_class.pk,
            },
            result="created",
        )
    return rule


def rule_update(
    *, rule: SignatureRule, actor: AbstractBaseUser, rule_data: dict, class_data: dict
) -> SignatureRule:
    compile_user_pattern(
        rule_data.get("pattern", rule.pattern),
        ignore_case=rule_data.get("ignore_case", rule.ignore_case),
    )
    with transaction.atomic():
        before = {k: getattr(rule, k) for k in RULE_FIELDS}
        for name in RULE_FIELDS:
            if name in rule_data:
                setattr(rule, name, rule_data[name])
        rule.updated_by = actor
        rule.save()
        error_class = rule.error_class
        for name in CLASS_TEXT_FIELDS:
            if name in class_data:
                setattr(error_class, name, class_data[name])
        error_class.named_by = actor
        error_class.save()
        production.audit_record(
            actor=actor,
            action="rule.update",
            experiment=rule.experiment,
            target=rule,
            params={
                k: [before[k], getattr(rule, k)]
                for k in RULE_FIELDS
                if before[k] != getattr(rule, k)
            },
            result="updated",
        )
    return rule


def rule_reclassify(*, rule_id: int, attempt_ids: list[int] | None = None) -> int:
    """Re-run classification for recent failures after a rule changed."""
    rule = SignatureRule.objects.filter(pk=rule_id).first()
    if rule is None:
        return 0
    ids = attempt_ids or selectors.attempt_ids_for_reclassify(experiment_id=rule.experiment_id)
    changed = 0
    for attempt_id in ids:
        before = (
            AttemptClassification.objects.filter(attempt_id=attempt_id)
            .values_list("error_class_id", flat=True)
            .first()
        )
        row = attempt_classify(attempt_id=attempt_id)
        if row is not None and row.error_class_id != before:
            changed += 1
    return changed


def custom_codes_load(
    *, experiment: Experiment, entries: list[dict], actor: AbstractBaseUser | None, family: str
) -> tuple[int, int]:
    """Create or update an experiment's own exit codes. Returns (created, updated)."""
    created = updated = 0
    with transaction.atomic():
        for item in entries:
            defaults = {
                "family": family,
                "title": str(item["title"])[:200],
                "explanation": str(item.get("explanation", "")),
                "category": item.get("category", Category.UNKNOWN),
                "transient": bool(item.get("transient", False)),
                "suggested_action": str(item.get("action", "")),
            }
            if defaults["category"] not in Category.VALUES:
                raise ValueError(
                    f"code {item['code']}: category must be one of {', '.join(Category.VALUES)}"
                )
            _, was_created = CustomExitCode.objects.update_or_create(
                experiment=experiment, code=int(item["code"]), defaults=defaults
            )
            created += was_created
            updated += not was_created
        production.audit_record(
            actor=actor,
            action="custom_codes.load",
            experiment=experiment,
            params={"family": family, "codes": [int(i["code"]) for i in entries]},
            result=f"{created} created, {updated} updated",
            actor_label="" if actor is not None else "manage.py triage_load_codes",
        )
    return created, updated


# --- node health (issue 5) -------------------------------------------------------------
# The verdict comes from the pure detector (triage.nodehealth.detector); these
# functions only load its inputs from the database and store what it says.


def node_health_config():
    """The detector's configuration; TRIAGE_NODE_HEALTH (a dict) overrides fields."""
    from triage.nodehealth.detector import Config

    overrides = getattr(settings, "TRIAGE_NODE_HEALTH", None) or {}
    return Config(**overrides)


def _failure_key(row: dict) -> str:
    key = row.get("classification__error_class__key")
    if key:
        return key
    # Not classified yet (the classify task may still be running): the exit
    # status stands in until the sweep sees the class.
    if row.get("signal") is not None:
        return f"signal:{row['signal']}"
    return f"exit:{row.get('exit_code')}"


def _node_outcomes(*, node, experiment_id: int, since: dt.datetime, config) -> list:
    from triage.nodehealth.detector import Outcome

    rows = list(
        Attempt.objects.filter(
            node_id=node.pk,
            job__stage__campaign__experiment_id=experiment_id,
            status__in=Attempt.ENDED,
            ended_at__gte=since,
        )
        .order_by("-ended_at", "-pk")
        .values(
            "pk",
            "ended_at",
            "started_at",
            "status",
            "wall_s",
            "exit_code",
            "signal",
            "job__stage__campaign_id",
            "classification__error_class__key",
        )[: config.window_n]
    )
    out = []
    for row in reversed(rows):
        failed = row["status"] == Attempt.Status.FAILED
        wall = row["wall_s"]
        if wall is None and row["started_at"] is not None:
            wall = (row["ended_at"] - row["started_at"]).total_seconds()
        out.append(
            Outcome(
                attempt_id=row["pk"],
                node=node.hostname,
                site=node.site,
                campaign=row["job__stage__campaign_id"],
                ended_at=row["ended_at"].timestamp(),
                failed=failed,
                wall_s=wall,
                error_class=_failure_key(row) if failed else "",
            )
        )
    return out


def _site_counts(*, site: str, now: dt.datetime, config) -> tuple[dict, dict]:
    """Ended attempts at a site over the baseline window, per node: counts per
    (node, campaign) -> (failed, total), failures per (node, campaign, class).

    One aggregate over the site's attempts (~0.75 s at 1 M jobs): every node's
    assessment needs it, after each attempt end, so it is kept in the cache for
    TRIAGE_BASELINE_CACHE_SECONDS (0: computed every time). Callers subtract
    the node being judged and the nodes already flagged."""
    from django.core.cache import cache
    from django.db.models import Q

    ttl = int(getattr(settings, "TRIAGE_BASELINE_CACHE_SECONDS", 60))
    key = f"triage:site-counts:{config.baseline_window_s:.0f}:{site}"
    if ttl > 0:
        cached = cache.get(key)
        if cached is not None:
            return cached
    since = now - dt.timedelta(seconds=config.baseline_window_s)
    ended = Attempt.objects.filter(node__site=site, status__in=Attempt.ENDED, ended_at__gte=since)
    counts = {
        (r["node_id"], r["job__stage__campaign_id"]): (r["f"], r["n"])
        for r in ended.values("node_id", "job__stage__campaign_id")
        .annotate(n=Count("pk"), f=Count("pk", filter=Q(status=Attempt.Status.FAILED)))
        .order_by()
    }
    classes: dict[tuple, int] = {}
    for r in (
        ended.filter(status=Attempt.Status.FAILED)
        .values(
            "node_id",
            "job__stage__campaign_id",
            "classification__error_class__key",
            "exit_code",
            "signal",
        )
        .annotate(f=Count("pk"))
        .order_by()
    ):
        k = (r["node_id"], r["job__stage__campaign_id"], _failure_key(r))
        classes[k] = classes.get(k, 0) + r["f"]
    if ttl > 0:
        cache.set(key, (counts, classes), timeout=ttl)
    return counts, classes


def _site_baselines(
    *, experiment_id: int, site: str, campaign_ids: set, node_id: int, now: dt.datetime, config
) -> tuple[dict, dict]:
    """Failure rate per (site, campaign), and per (site, campaign, class), over
    the baseline window, the node itself and nodes already flagged left out
    (they would drag the baseline up)."""
    from triage.models import NodeHealth
    from triage.nodehealth.detector import shrunk_class_rate, shrunk_rate

    left_out = {node_id} | set(
        NodeHealth.objects.filter(
            experiment_id=experiment_id, state=NodeHealth.State.BLACK_HOLE
        ).values_list("node_id", flat=True)
    )
    per_node, per_node_class = _site_counts(site=site, now=now, config=config)
    found: dict = {}
    for (node, cid), (f, n) in per_node.items():
        if node in left_out or cid not in campaign_ids:
            continue
        f0, n0 = found.get(cid, (0, 0))
        found[cid] = (f0 + f, n0 + n)
    rates = {
        (site, cid): shrunk_rate(*found.get(cid, (0, 0)), config=config) for cid in campaign_ids
    }
    # Failures per class, keyed as _failure_key keys the node's own (an
    # unclassified failure by its exit status), so both sides agree.
    class_counts: dict[tuple, int] = {}
    for (node, cid, error_class), f in per_node_class.items():
        if node in left_out or cid not in campaign_ids:
            continue
        key = (site, cid, error_class)
        class_counts[key] = class_counts.get(key, 0) + f
    class_rates = {
        key: shrunk_class_rate(f, found.get(key[1], (0, 0))[1], config=config)
        for key, f in class_counts.items()
    }
    prior = {
        cid: shrunk_class_rate(0, found.get(cid, (0, 0))[1], config=config) for cid in campaign_ids
    }

    def class_rate(site_: str, campaign_id, error_class: str) -> float:
        found_rate = class_rates.get((site_, campaign_id, error_class))
        return (
            found_rate
            if found_rate is not None
            else prior.get(campaign_id, config.class_prior_rate)
        )

    return rates, class_rate


def _evidence_json(evidence, *, outcomes: list) -> dict:
    data = evidence.as_dict()
    if data.get("first_bad_at") is not None:
        data["first_bad_at"] = dt.datetime.fromtimestamp(
            data["first_bad_at"], tz=dt.UTC
        ).isoformat()
    first = data.get("first_bad_attempt_id")
    if first is not None:
        uid = Attempt.objects.filter(pk=first).values_list("uid", flat=True).first()
        data["first_bad_attempt_uid"] = str(uid) if uid else None
    data["campaign_ids"] = sorted({o.campaign for o in outcomes})
    return data


def _node_health_row(*, experiment_id: int, node_id: int):
    from triage.models import NodeHealth

    try:
        with transaction.atomic():
            NodeHealth.objects.get_or_create(experiment_id=experiment_id, node_id=node_id)
    except IntegrityError:
        pass  # created concurrently
    return (
        NodeHealth.objects.select_for_update()
        .select_related("node")
        .get(experiment_id=experiment_id, node_id=node_id)
    )


def node_health_assess(*, experiment_id: int, node_id: int, now: dt.datetime | None = None):
    """Judge one node for one experiment and store the verdict (and a timeline
    event when the state changes). A manual flag is kept; its evidence refreshed."""
    from triage.models import NodeHealth, NodeHealthEvent
    from triage.nodehealth.detector import assess_node

    now = now or timezone.now()
    config = node_health_config()
    with transaction.atomic():
        health = _node_health_row(experiment_id=experiment_id, node_id=node_id)
        since = now - dt.timedelta(seconds=config.window_s)
        if health.evidence_since and health.evidence_since > since:
            since = health.evidence_since
        outcomes = _node_outcomes(
            node=health.node, experiment_id=experiment_id, since=since, config=config
        )
        baselines, class_baselines = _site_baselines(
            experiment_id=experiment_id,
            site=health.node.site,
            campaign_ids={o.campaign for o in outcomes},
            node_id=node_id,
            now=now,
            config=config,
        )
        previous = health.state
        result = assess_node(
            outcomes,
            baselines=baselines,
            class_baselines=class_baselines,
            previous=previous,
            config=config,
        )
        health.evidence = _evidence_json(result.evidence, outcomes=outcomes)
        if not health.manual and result.state != previous:
            NodeHealthEvent.objects.create(
                health=health,
                at=now,
                before=previous,
                after=result.state,
                note=result.evidence.reason,
                evidence=health.evidence,
            )
            if previous == NodeHealth.State.BLACK_HOLE:
                health.evidence_since = now  # start afresh: see NodeHealth
            health.state = result.state
            health.since = now
            logger.info("node %s: %s -> %s", health.node, previous, result.state)
            if result.state == NodeHealth.State.BLACK_HOLE:
                _notify_black_hole(health, reason=result.evidence.reason)
        health.save()
        return health


def node_health_update(*, attempt_id: int):
    """After an attempt ends: re-judge its node for its experiment."""
    row = (
        Attempt.objects.filter(pk=attempt_id, node__isnull=False)
        .values("node_id", "job__stage__campaign__experiment_id", "status")
        .first()
    )
    if row is None or row["status"] not in Attempt.ENDED:
        return None
    return node_health_assess(
        experiment_id=row["job__stage__campaign__experiment_id"], node_id=row["node_id"]
    )


def node_health_sweep(*, now: dt.datetime | None = None) -> int:
    """Re-judge every node that is not healthy: old failures leave the window
    with time, so a node nobody sends jobs to any more is cleared too."""
    from triage.models import NodeHealth

    pairs = list(
        NodeHealth.objects.exclude(state=NodeHealth.State.HEALTHY).values_list(
            "experiment_id", "node_id"
        )
    )
    for experiment_id, node_id in pairs:
        node_health_assess(experiment_id=experiment_id, node_id=node_id, now=now)
    return len(pairs)


class NodeHealthNoteRequired(ValueError):
    pass


def node_health_set(*, health_id: int, flag: bool, actor: AbstractBaseUser, note: str):
    """A shifter flags a node as a black hole, or clears it, with a note. Audited.

    A manual flag stays until a shifter clears it. Clearing forgets the
    evidence so far: the detector flags the node again only on new failures.
    """
    from django.core.exceptions import PermissionDenied

    from prodmon import selectors as production_selectors
    from prodmon.models import Role
    from triage.models import NodeHealth, NodeHealthEvent

    note = (note or "").strip()
    if not note:
        raise NodeHealthNoteRequired("say why in a note")
    with transaction.atomic():
        health = (
            NodeHealth.objects.select_for_update()
            .select_related("node", "experiment")
            .get(pk=health_id)
        )
        role = production_selectors.user_role(user=actor, experiment_id=health.experiment_id)
        if role is None or role < Role.SHIFTER:
            raise PermissionDenied("only shifters may flag or clear nodes")
        now = timezone.now()
        before = health.state
        health.state = NodeHealth.State.BLACK_HOLE if flag else NodeHealth.State.HEALTHY
        health.manual = flag
        health.note = note
        health.since = now
        if not flag:
            health.evidence_since = now
        health.save()
        NodeHealthEvent.objects.create(
            health=health,
            at=now,
            before=before,
            after=health.state,
            manual=True,
            actor=actor,
            note=note,
            evidence=health.evidence,
        )
        production.audit_record(
            actor=actor,
            action="node_health.flag" if flag else "node_health.clear",
            experiment=health.experiment,
            target=health.node,
            params={"hostname": health.node.hostname, "note": note, "from": before},
            result=health.state,
        )
        return health


# --- liveness (issue 5) ------------------------------------------------------------------


def liveness_settings() -> dict:
    heartbeat_s = float(
        getattr(settings, "TRIAGE_HEARTBEAT_SECONDS", None)
        or getattr(settings, "PRODMON_HEARTBEAT_SECONDS", None)
        or 60
    )
    return {
        "heartbeat_s": heartbeat_s,
        "lost_after_s": heartbeat_s * float(getattr(settings, "TRIAGE_LOST_AFTER_HEARTBEATS", 3)),
        "hung_after_s": float(getattr(settings, "TRIAGE_HUNG_AFTER_SECONDS", 1800)),
    }


def liveness_sweep(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Judge every running attempt: lost (no heartbeat for lost_after_s), hung
    (log offset and CPU time still for hung_after_s) or ok. Returns counts."""
    from triage.models import AttemptLiveness

    now = now or timezone.now()
    conf = liveness_settings()
    lost_before = now - dt.timedelta(seconds=conf["lost_after_s"])
    hung_before = now - dt.timedelta(seconds=conf["hung_after_s"])
    running = Attempt.objects.filter(status=Attempt.Status.RUNNING).values(
        "pk", "last_heartbeat_at", "started_at", "log_bytes", "cpu_s", "job__stage__campaign_id"
    )
    counts = {"ok": 0, "lost": 0, "hung": 0}
    newly_hung: Counter[int] = Counter()
    with transaction.atomic():
        rows = {
            r.attempt_id: r
            for r in AttemptLiveness.objects.select_for_update(of=("self",)).filter(
                attempt__status=Attempt.Status.RUNNING
            )
        }
        new, changed, dirty = [], [], set()
        for a in running.iterator(chunk_size=2000):
            row = rows.get(a["pk"])
            if row is None:
                row = AttemptLiveness(
                    attempt_id=a["pk"],
                    campaign_id=a["job__stage__campaign_id"],
                    since=now,
                    last_log_bytes=a["log_bytes"],
                    last_cpu_s=a["cpu_s"],
                    progress_at=now,
                )
                new.append(row)
                dirty.add(a["pk"])
            elif a["log_bytes"] > row.last_log_bytes or (
                a["cpu_s"] is not None and (row.last_cpu_s is None or a["cpu_s"] > row.last_cpu_s)
            ):
                row.last_log_bytes, row.last_cpu_s, row.progress_at = (
                    a["log_bytes"],
                    a["cpu_s"],
                    now,
                )
                changed.append(row)
                dirty.add(a["pk"])
            seen = a["last_heartbeat_at"] or a["started_at"]
            if seen is not None and seen < lost_before:
                state = AttemptLiveness.State.LOST
            elif row.progress_at < hung_before:
                state = AttemptLiveness.State.HUNG
            else:
                state = AttemptLiveness.State.OK
            if state != row.state:
                if row.state == AttemptLiveness.State.LOST:
                    row.revived_at = now
                if state == AttemptLiveness.State.HUNG:
                    newly_hung[a["job__stage__campaign_id"]] += 1
                row.state, row.since = state, now
                if a["pk"] not in dirty:
                    changed.append(row)
                    dirty.add(a["pk"])
            counts[state] += 1
        AttemptLiveness.objects.bulk_create(new, batch_size=1000)
        AttemptLiveness.objects.bulk_update(
            changed,
            ["state", "since", "revived_at", "last_log_bytes", "last_cpu_s", "progress_at"],
            batch_size=1000,
        )
        if newly_hung:
            _notify_hung(newly_hung, hung_after_s=conf["hung_after_s"], now=now)
    return counts


def _notify_hung(newly_hung: Counter[int], *, hung_after_s: float, now: dt.datetime) -> None:
    """One notification per campaign and sweep: how many attempts were just
    flagged hung, linking to the job table filtered to them."""
    from prodmon.progress.notifications import notify

    campaigns = Campaign.objects.filter(pk__in=newly_hung).values_list(
        "pk", "experiment_id", "name"
    )

    def send():
        for campaign_id, experiment_id, name in campaigns:
            n = newly_hung[campaign_id]
            notify(
                kind="hung_attempts",
                experiment=experiment_id,
                subject=f"{n} attempt{'s' if n != 1 else ''} of {name} flagged as hung",
                body=(
                    f"Neither the log nor the CPU time of {'these attempts' if n != 1 else 'it'} "
                    f"advanced for {hung_after_s / 60:.0f} minutes."
                ),
                url=f"{reverse('job-list')}?campaign={campaign_id}&attention=hung",
                key=f"hung:{campaign_id}:{now:%Y%m%d%H%M%S}",
            )

    transaction.on_commit(send)


def liveness_on_heartbeats(*, attempt_ids: list[int]) -> int:
    """liveness_on_heartbeat for the heartbeats of a batch: one query finds
    the (rare) lost or hung attempts among them. Returns how many revived."""
    from triage.models import AttemptLiveness

    if not attempt_ids:
        return 0
    table = connection.ops.quote_name(AttemptLiveness._meta.db_table)
    marks = ", ".join(["%s"] * len(attempt_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT attempt_id FROM {table} "  # noqa: S608
            f"WHERE attempt_id IN ({marks}) AND state IN (%s, %s)",
            [*attempt_ids, AttemptLiveness.State.LOST, AttemptLiveness.State.HUNG],
        )
        troubled = [row[0] for row in cursor.fetchall()]
    return sum(liveness_on_heartbeat(attempt_id=a) for a in troubled)


def liveness_on_heartbeat(*, attempt_id: int) -> bool:
    """A heartbeat revives a lost attempt (and a hung one whose log or CPU time
    moved). One cheap query for the usual, healthy case. True when revived."""
    from triage.models import AttemptLiveness

    # The usual case, a healthy attempt, costs one hand-written statement: this
    # runs after every heartbeat, and the ORM's compiler costs more than the query.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {connection.ops.quote_name(AttemptLiveness._meta.db_table)} "  # noqa: S608
            "WHERE attempt_id = %s AND state IN (%s, %s) LIMIT 1",
            [attempt_id, AttemptLiveness.State.LOST, AttemptLiveness.State.HUNG],
        )
        if cursor.fetchone() is None:
            return False
    now = timezone.now()
    revived = AttemptLiveness.objects.filter(
        attempt_id=attempt_id, state=AttemptLiveness.State.LOST
    ).update(state=AttemptLiveness.State.OK, since=now, revived_at=now)
    if revived:
        return True
    row = AttemptLiveness.objects.filter(
        attempt_id=attempt_id, state=AttemptLiveness.State.HUNG
    ).first()
    if row is None:
        return False
    a = Attempt.objects.filter(pk=attempt_id).values("log_bytes", "cpu_s").first()
    if a and (
        a["log_bytes"] > row.last_log_bytes
        or (a["cpu_s"] is not None and (row.last_cpu_s is None or a["cpu_s"] > row.last_cpu_s))
    ):
        AttemptLiveness.objects.filter(pk=row.pk).update(
            state=AttemptLiveness.State.OK,
            since=now,
            progress_at=now,
            last_log_bytes=a["log_bytes"],
            last_cpu_s=a["cpu_s"],
        )
        return True
    return False


# --- partial failures of multi-output jobs (issue 5) ---------------------------------------
# The verdicts come from the pure triage.partial; these functions load the facts
# (the job's declared outputs and events, the attempt's outputs) and keep one
# PartialFailure row per (attempt, kind) and per (submission, kind).


def partial_failure_assess(*, attempt_id: int) -> list:
    """Judge an ended attempt, then its submission (and, when the attempt is
    its job's good one, the submissions of the job's other attempts, whose
    redo lists may have shrunk). Returns the attempt's rows."""
    from prodmon.models import Job
    from triage import partial
    from triage.models import PartialFailure

    attempt = (
        Attempt.objects.select_related("job__stage__campaign")
        .filter(pk=attempt_id, status__in=Attempt.ENDED)
        .first()
    )
    if attempt is None:
        return []
    job = attempt.job
    stage = job.stage
    now = timezone.now()
    if attempt.is_duplicate_completion:
        # Progress and outputs count one completion: a duplicate adds no finding.
        findings = []
    else:
        findings = partial.attempt_findings(
            job_key=job.key,
            # Exit 0 claims success (a post-hoc check may have failed it since).
            claimed_success=attempt.exit_code == 0 and attempt.signal is None,
            expected_outputs=job.expected_outputs,
            outputs=[
                partial.OutputSeen(o.name, o.size, o.events)
                for o in OutputFile.objects.filter(attempt=attempt).only("name", "size", "events")
            ],
            events_processed=attempt.events_processed,
            events_expected=job.events_expected,
        )
    # A finding on an attempt whose job has (another) good attempt needs no redo.
    good_id = Job.objects.filter(pk=job.pk).values_list("good_attempt_id", flat=True).first()
    settled = good_id is not None and good_id != attempt.pk
    rows = []
    with transaction.atomic():
        PartialFailure.objects.filter(attempt=attempt).exclude(
            kind__in=[f.kind for f in findings]
        ).delete()
        for f in findings:
            row, _ = PartialFailure.objects.update_or_create(
                attempt=attempt,
                kind=f.kind,
                defaults={
                    "experiment_id": stage.campaign.experiment_id,
                    "campaign_id": stage.campaign_id,
                    "stage_id": stage.pk,
                    "submission_id": attempt.submission_id,
                    "job_id": job.pk,
                    "severity": f.severity,
                    "detail": f.detail[:300],
                    "redo_what": f.redo_what,
                    "redo": f.redo,
                    "events_done": f.events_done,
                    "events_expected": f.events_expected,
                    "resolved_at": now if settled and f.severity == partial.FAILURE else None,
                },
            )
            rows.append(row)
        if good_id == attempt.pk:
            PartialFailure.objects.filter(
                job=job, severity=partial.FAILURE, resolved_at__isnull=True
            ).exclude(attempt=attempt).update(resolved_at=now)
    submissions = {attempt.submission_id} if attempt.submission_id else set()
    if good_id == attempt.pk:
        submissions |= set(
            Attempt.objects.filter(job=job, submission__isnull=False).values_list(
                "submission_id", flat=True
            )
        )
    for submission_id in sorted(submissions):
        partial_failure_assess_submission(submission_id=submission_id)
    return rows


def partial_failure_assess_submission(*, submission_id: int):
    """Judge a submission once none of its attempts is open: whole or partial
    failure, and which inputs still need a good attempt."""
    from django.db.models import Exists, OuterRef, Q

    from prodmon.models import Submission
    from triage import partial
    from triage.models import PartialFailure

    submission = (
        Submission.objects.select_related("stage__campaign").filter(pk=submission_id).first()
    )
    if submission is None:
        return None
    attempts = Attempt.objects.filter(submission=submission)
    if attempts.filter(status__in=[Attempt.Status.QUEUED, Attempt.Status.RUNNING]).exists():
        return None  # judged when its last attempt ends
    has_output = OutputFile.objects.filter(attempt=OuterRef("pk"), size__gt=0)
    per_job: dict[str, partial.SubmissionJob] = {}
    for row in attempts.annotate(out=Exists(has_output)).values(
        "job__key", "status", "out", "job__good_attempt_id"
    ):
        produced = row["status"] == Attempt.Status.SUCCEEDED or row["out"]
        seen = per_job.get(row["job__key"])
        per_job[row["job__key"]] = partial.SubmissionJob(
            row["job__key"],
            produced or (seen is not None and seen.produced_output),
            recovered=row["job__good_attempt_id"] is not None,
        )
    finding = partial.submission_finding(list(per_job.values()))
    stage = submission.stage
    now = timezone.now()
    with transaction.atomic():
        stale = PartialFailure.objects.filter(submission=submission, attempt__isnull=True)
        if finding is None:
            stale.delete()
            return None
        stale.filter(~Q(kind=finding.kind)).delete()
        row, _ = PartialFailure.objects.update_or_create(
            submission=submission,
            attempt=None,
            kind=finding.kind,
            defaults={
                "experiment_id": stage.campaign.experiment_id,
                "campaign_id": stage.campaign_id,
                "stage_id": stage.pk,
                "severity": finding.severity,
                "detail": finding.detail[:300],
                "redo_what": finding.redo_what,
                "redo": finding.redo,
                "resolved_at": None if finding.redo else now,
            },
        )
    return row
