"""Writes to the production model.

Lock order, everywhere: a Job row before any of its Attempt rows. Heartbeats
lock only the attempt and never touch the job, so no two paths can deadlock.
"""

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from prodmon import rows
from prodmon.models import (
    Attempt,
    AuditEntry,
    Campaign,
    ConfigSnapshot,
    Experiment,
    Job,
    Membership,
    Node,
    OutputFile,
    Role,
    Stage,
    StageProgressSample,
)

OPEN_STATUSES = (Attempt.Status.QUEUED, Attempt.Status.RUNNING)
# A node's last_seen is refreshed at most this often, to keep heartbeats cheap.
NODE_TOUCH_INTERVAL = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class AttemptIdentity:
    """Who an event is about: names as the job knows them, plus the attempt uid."""

    campaign: str
    stage: str
    job: str
    attempt: uuid.UUID


class IdentityError(Exception):
    """An event names something that does not exist or does not match.

    `field` is the request field at fault; `status` the HTTP status to answer.
    """

    def __init__(self, field: str, message: str, status: int = 404):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Metrics:
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    disk_bytes: int | None = None
    events_processed: int | None = None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    size: int
    checksum: str = ""
    events: int | None = None
    parents: tuple[str, ...] = ()


# --- experiments, memberships, campaigns, stages ------------------------------


def experiment_create(*, name: str, title: str = "") -> Experiment:
    return Experiment.objects.create(name=name, title=title)


def membership_set(*, user: AbstractBaseUser, experiment: Experiment, role: Role) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        user=user, experiment=experiment, defaults={"role": role}
    )
    return membership


def campaign_create(
    *, experiment: Experiment, name: str, title: str = "", description: str = ""
) -> Campaign:
    return Campaign.objects.create(
        experiment=experiment, name=name, title=title, description=description
    )


def stage_create(
    *,
    campaign: Campaign,
    name: str,
    order: int = 0,
    job_type: str = "",
    expected_jobs: int = 0,
    completion_pct: int = 95,
    depends_on: Iterable[Stage] = (),
    command: str | None = None,
    release: str = "",
    environment: dict | None = None,
    config_files: dict[str, str] | None = None,
) -> Stage:
    """Create a stage and, when a command is given, its immutable config snapshot."""

    with transaction.atomic():
        stage = Stage.objects.create(
            campaign=campaign,
            name=name,
            order=order,
            job_type=job_type,
            expected_jobs=expected_jobs,
            completion_pct=completion_pct,
        )
        parents = list(depends_on)
        for parent in parents:
            if parent.campaign_id != campaign.pk:
                raise ValueError(f"stage {parent} is not in campaign {campaign}")
        stage.depends_on.set(parents)
        if command is not None:
            files = [
                {
                    "name": fname,
                    "content": content,
                    "sha256": hashlib.sha256(content.encode()).hexdigest(),
                }
                for fname, content in sorted((config_files or {}).items())
            ]
            ConfigSnapshot.objects.create(
                stage=stage,
                command=command,
                release=release,
                environment=environment or {},
                files=files,
            )
    return stage


def audit_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    experiment: Experiment | None = None,
    target: object | None = None,
    params: dict | None = None,
    result: str = "",
    actor_label: str = "",
) -> AuditEntry:
    label = actor_label or (actor.get_username() if actor is not None else "system")
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=label,
        experiment=experiment,
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "")) if target is not None else "",
        params=params or {},
        result=result,
    )


# --- nodes --------------------------------------------------------------------


def _node_touch(node: Node, *, site: str, properties: dict, at: dt.datetime) -> None:
    """What a start on `node` changes of it (written here when anything does)."""
    changed = {}
    if site and node.site != site:
        changed["site"] = site
    merged = {**node.properties, **properties}
    if merged != node.properties:
        changed["properties"] = merged
    if at - node.last_seen > NODE_TOUCH_INTERVAL:
        changed["last_seen"] = at
    if changed:
        for key, value in changed.items():
            setattr(node, key, value)
        rows.update(node, changed)


def nodes_upsert(specs: list[tuple[str, str, dict, dt.datetime]]) -> dict[str, Node]:
    """node_upsert for many (hostname, site, properties, at), in order: one
    SELECT, one INSERT of the new ones, an UPDATE per node that changed.
    Hostname -> node; a node another transaction inserts meanwhile is missing
    (the caller uses node_upsert for it)."""
    hostnames = sorted({h for h, _, _, _ in specs})
    marks = ", ".join(["%s"] * len(hostnames))
    nodes = {
        n.hostname: n
        for n, _ in rows.fetch_all(
            Node,
            f"SELECT {rows.select_list(Node, 'n')} FROM {rows.table(Node)} n "  # noqa: S608
            f"WHERE n.hostname IN ({marks})",
            hostnames,
        )
    }
    new: dict[str, dict] = {}
    for hostname, site, properties, at in specs:
        if hostname in nodes:
            continue
        first = new.setdefault(
            hostname,
            {
                "hostname": hostname,
                "site": site,
                "properties": {},
                "first_seen": at,
                "last_seen": at,
            },
        )
        first["site"] = site or first["site"]
        first["properties"] = {**first["properties"], **properties}
    created = rows.insert_many(Node, ("hostname",), list(new.values()))
    fresh = {n.hostname for n in created if n is not None}
    nodes.update({n.hostname: n for n in created if n is not None})
    for hostname, site, properties, at in specs:
        node = nodes.get(hostname)
        if node is not None and hostname not in fresh:
            _node_touch(node, site=site, properties=properties, at=at)
    return nodes


def node_upsert(*, hostname: str, site: str, properties: dict, at: dt.datetime) -> Node:
    found = rows.fetch(
        Node,
        f"SELECT {rows.select_list(Node, 'n')} FROM {rows.table(Node)} n "  # noqa: S608
        "WHERE n.hostname = %s",
        [hostname],
    )
    if found is None:
        node = rows.insert(
            Node,
            conflict=("hostname",),
            hostname=hostname,
            site=site,
            properties=properties,
            first_seen=at,
            last_seen=at,
        )
        if node is not None:
            return node
        # Another event for the same new node won the race.
        node = Node.objects.get(hostname=hostname)
    else:
        node = found[0]
    _node_touch(node, site=site, properties=properties, at=at)
    return node


# --- attempts -----------------------------------------------------------------
#
# The ingest hot path. Its statements are written by hand (prodmon.rows): the
# ORM's query compiler costs ten to twenty times what a statement costs on a
# local PostgreSQL, and these run several times per ingested event.


def _stage_resolve(*, experiment: Experiment, identity: AttemptIdentity) -> Stage:
    found = rows.fetch(
        Stage,
        f"SELECT {rows.select_list(Stage, 's')} FROM {rows.table(Stage)} s "  # noqa: S608
        f"JOIN {rows.table(Campaign)} c ON c.id = s.campaign_id "
        "WHERE c.experiment_id = %s AND c.name = %s AND s.name = %s",
        [experiment.pk, identity.campaign, identity.stage],
    )
    if found is None:
        if not Campaign.objects.filter(experiment=experiment, name=identity.campaign).exists():
            raise IdentityError(
                "campaign", f"experiment {experiment.name!r} has no campaign {identity.campaign!r}"
            )
        raise IdentityError(
            "stage", f"campaign {identity.campaign!r} has no stage {identity.stage!r}"
        )
    return found[0]


def _check_identity(attempt: Attempt, *, experiment: Experiment, identity: AttemptIdentity) -> None:
    experiment_id, campaign, stage, job_key = attempt._names
    if (
        experiment_id != experiment.pk
        or campaign != identity.campaign
        or stage != identity.stage
        or job_key != identity.job
    ):
        raise IdentityError(
            "attempt",
            f"attempt {identity.attempt} belongs to another job, not "
            f"{identity.campaign}/{identity.stage}/{identity.job}",
            status=409,
        )


_UID = Attempt._meta.get_field("uid")


def _attempt_find(*, identity: AttemptIdentity, lock: bool) -> Attempt | None:
    """The attempt by uid, with the names it is known by (`attempt._names`:
    experiment id, campaign, stage, job key) for the identity check, and its
    campaign's id (`attempt._campaign_id`)."""
    found = rows.fetch(
        Attempt,
        f"SELECT {rows.select_list(Attempt, 'a')}, c.experiment_id, c.name, s.name, j.key, c.id "  # noqa: S608
        f"FROM {rows.table(Attempt)} a JOIN {rows.table(Job)} j ON j.id = a.job_id "
        f"JOIN {rows.table(Stage)} s ON s.id = j.stage_id "
        f"JOIN {rows.table(Campaign)} c ON c.id = s.campaign_id "
        f"WHERE a.uid = %s{rows.for_update('a') if lock else ''}",
        [_UID.get_db_prep_value(identity.attempt, connection)],
        extra=5,
    )
    if found is None:
        return None
    attempt, names = found
    attempt._names, attempt._campaign_id = names[:4], names[4]
    return attempt


def _job_by(where: str, params) -> Job | None:
    found = rows.fetch(
        Job,
        f"SELECT {rows.select_list(Job, 'j')} FROM {rows.table(Job)} j "  # noqa: S608
        f"WHERE {where}{rows.for_update()}",
        params,
    )
    return None if found is None else found[0]


def _job_lock(
    *, stage: Stage, key: str, create: bool, state: str = Job.State.PENDING
) -> tuple[Job, bool]:
    """Lock the stage's job `key`; with `create`, insert it when new (with its
    first attempt counted: the caller creates that attempt). Returns (job, created)."""
    where = "j.stage_id = %s AND j.key = %s"
    if create:
        # Most events name a job's first attempt: try the insert first. A
        # concurrent creator makes it wait, then a no-op; lock the row below.
        job = rows.insert(
            Job, conflict=("stage", "key"), stage_id=stage.pk, key=key, attempt_count=1, state=state
        )
        if job is not None:
            return job, True
    job = _job_by(where, [stage.pk, key])
    if job is None:
        raise IdentityError("job", f"stage {stage} has no job {key!r}")
    return job, False


def _attempt_locked_with_job(
    *,
    experiment: Experiment,
    identity: AttemptIdentity,
    create_job: bool = True,
    initial: dict | None = None,
    job_state: str = Job.State.PENDING,
) -> tuple[Job, Attempt]:
    """Lock the job, then the attempt (creating either when new). Job first, always.

    A new attempt is inserted with the `initial` field values; it is marked
    `attempt.created` so the caller need not write them again."""
    existing = _attempt_find(identity=identity, lock=False)
    if existing is not None:
        _check_identity(existing, experiment=experiment, identity=identity)
        job = _job_by("j.id = %s", [existing.job_id])
        attempt = _attempt_find(identity=identity, lock=True)
        attempt.job = job
        return job, attempt
    stage = _stage_resolve(experiment=experiment, identity=identity)
    job, created = _job_lock(stage=stage, key=identity.job, create=create_job, state=job_state)
    job.stage = stage
    if not created:
        # Another event for this attempt may have created it while we waited.
        # (A job we just created has no attempts: any other creator waits on it.)
        attempt = _attempt_find(identity=identity, lock=True)
        if attempt is not None:
            _check_identity(attempt, experiment=experiment, identity=identity)
            attempt.job = job
            return job, attempt
        # The job row is locked, so its count is current: no re-read needed.
        job.attempt_count += 1
        rows.update(job, ["attempt_count", "updated_at"])
    attempt = rows.insert(
        Attempt, uid=identity.attempt, job=job, number=job.attempt_count, **(initial or {})
    )
    attempt.job = job
    attempt.created = True
    return job, attempt


def attempt_for_update(*, experiment: Experiment, identity: AttemptIdentity) -> Attempt:
    """Lock the attempt alone (the heartbeat path). Creates it when unseen."""
    attempt = _attempt_find(identity=identity, lock=True)
    if attempt is not None:
        _check_identity(attempt, experiment=experiment, identity=identity)
        return attempt
    _, attempt = _attempt_locked_with_job(experiment=experiment, identity=identity)
    return attempt


def _apply_metrics(attempt: Attempt, metrics: Metrics) -> list[str]:
    fields = []
    for name in ("wall_s", "cpu_s", "disk_bytes", "events_processed"):
        value = getattr(metrics, name)
        if value is not None:
            setattr(attempt, name, value)
            fields.append(name)
    if metrics.peak_rss_bytes is not None:
        # A peak is a peak: a later, smaller reading never lowers it.
        attempt.peak_rss_bytes = max(attempt.peak_rss_bytes or 0, metrics.peak_rss_bytes)
        fields.append("peak_rss_bytes")
    if attempt.wall_s and attempt.cpu_s is not None:
        attempt.cpu_efficiency = attempt.cpu_s / (attempt.wall_s * max(attempt.cores, 1))
        fields.append("cpu_efficiency")
    return fields


def _later(current: dt.datetime | None, candidate: dt.datetime) -> dt.datetime:
    return candidate if current is None or candidate > current else current


def attempt_record_start(
    *,
    experiment: Experiment,
    identity: AttemptIdentity,
    at: dt.datetime,
    hostname: str,
    site: str = "",
    node_properties: dict | None = None,
    cores: int | None = None,
    batch_id: str = "",
) -> Attempt:
    node = node_upsert(hostname=hostname, site=site, properties=node_properties or {}, at=at)
    job, attempt = _attempt_locked_with_job(
        experiment=experiment,
        identity=identity,
        initial={
            "node": node,
            "started_at": at,
            "last_heartbeat_at": at,
            "cores": cores or 1,
            "batch_id": batch_id,
            "status": Attempt.Status.RUNNING,
        },
        job_state=Job.State.RUNNING,
    )
    if not getattr(attempt, "created", False):
        attempt.node = node
        attempt.started_at = at if attempt.started_at is None else min(attempt.started_at, at)
        attempt.last_heartbeat_at = _later(attempt.last_heartbeat_at, at)
        if cores:
            attempt.cores = cores
        if batch_id:
            attempt.batch_id = batch_id
        if attempt.status == Attempt.Status.QUEUED:
            attempt.status = Attempt.Status.RUNNING
        rows.update(
            attempt, ["node", "started_at", "last_heartbeat_at", "cores", "batch_id", "status"]
        )
    if (
        attempt.status == Attempt.Status.RUNNING
        and job.good_attempt_id is None
        and job.state != Job.State.RUNNING
    ):
        job.state = Job.State.RUNNING
        rows.update(job, ["state", "updated_at"])
    return attempt


@dataclass(frozen=True)
class StartSpec:
    experiment: Experiment
    identity: AttemptIdentity
    at: dt.datetime
    hostname: str
    site: str = ""
    node_properties: dict | None = None
    cores: int | None = None
    batch_id: str = ""


def attempts_record_starts(*, starts: list[StartSpec]) -> list[Attempt | IdentityError | None]:
    """attempt_record_start for the usual start, together: an attempt never
    seen, the first of a job never seen. One SELECT for known attempts, one
    per stage, one for nodes, an INSERT of the new nodes, one of the jobs and
    one of the attempts. Per start: its new Attempt; the IdentityError that
    refused it; or None where this path does not apply (the attempt or its
    job exists: a retry, a late start, a second attempt of a new job in the
    same batch): the caller applies that one with attempt_record_start."""
    uids = [_UID.get_db_prep_value(x.identity.attempt, connection) for x in starts]
    if len(set(uids)) != len(uids):
        raise ValueError("a batch of starts must name each attempt once")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT uid FROM {rows.table(Attempt)} "  # noqa: S608
            f"WHERE uid IN ({', '.join(['%s'] * len(uids))})",
            uids,
        )
        known = {_UID.to_python(row[0]) for row in cursor.fetchall()}
    out: list[Attempt | IdentityError | None] = [None] * len(starts)
    stages: dict[tuple, Stage | IdentityError] = {}
    todo: list[int] = []
    for i, x in enumerate(starts):
        if x.identity.attempt in known:
            continue
        key = (x.experiment.pk, x.identity.campaign, x.identity.stage)
        if key not in stages:
            try:
                stages[key] = _stage_resolve(experiment=x.experiment, identity=x.identity)
            except IdentityError as exc:
                stages[key] = exc
        if isinstance(stages[key], IdentityError):
            out[i] = stages[key]
        else:
            todo.append(i)
    if not todo:
        return out
    nodes = nodes_upsert(
        [
            (starts[i].hostname, starts[i].site, starts[i].node_properties or {}, starts[i].at)
            for i in todo
        ]
    )
    todo = [i for i in todo if starts[i].hostname in nodes]
    stage_of = {
        i: stages[(starts[i].experiment.pk, starts[i].identity.campaign, starts[i].identity.stage)]
        for i in todo
    }
    jobs = rows.insert_many(
        Job,
        ("stage", "key"),
        [
            {
                "stage_id": stage_of[i].pk,
                "key": starts[i].identity.job,
                "attempt_count": 1,
                "state": Job.State.RUNNING,
            }
            for i in todo
        ],
    )
    todo_jobs = [(i, job) for i, job in zip(todo, jobs, strict=True) if job is not None]
    attempts = rows.insert_many(
        Attempt,
        ("uid",),
        [
            {
                "uid": starts[i].identity.attempt,
                "job_id": job.pk,
                "number": 1,
                "node": nodes[starts[i].hostname],
                "started_at": starts[i].at,
                "last_heartbeat_at": starts[i].at,
                "cores": starts[i].cores or 1,
                "batch_id": starts[i].batch_id,
                "status": Attempt.Status.RUNNING,
            }
            for i, job in todo_jobs
        ],
    )
    for (i, job), attempt in zip(todo_jobs, attempts, strict=True):
        if attempt is None:
            # Inserted meanwhile by another transaction (a Loki push creates
            # attempts too): the caller redoes the batch event by event.
            raise RuntimeError(f"attempt {starts[i].identity.attempt} appeared during the batch")
        job.stage = stage_of[i]
        attempt.job = job
        attempt.created = True
        out[i] = attempt
    return out


def attempt_record_heartbeat(
    *,
    experiment: Experiment,
    identity: AttemptIdentity,
    at: dt.datetime,
    metrics: Metrics,
    log_end: int | None = None,
) -> Attempt:
    attempt = attempt_for_update(experiment=experiment, identity=identity)
    rows.update(attempt, _heartbeat_apply(attempt, at=at, metrics=metrics, log_end=log_end))
    return attempt


def _heartbeat_apply(
    attempt: Attempt, *, at: dt.datetime, metrics: Metrics, log_end: int | None
) -> list[str]:
    """A heartbeat's changes to the locked attempt; the fields changed."""
    fields = ["last_heartbeat_at"]
    is_newest = attempt.last_heartbeat_at is None or at >= attempt.last_heartbeat_at
    attempt.last_heartbeat_at = _later(attempt.last_heartbeat_at, at)
    if attempt.status == Attempt.Status.QUEUED:
        # The start event is late or was lost; the heartbeat proves it runs.
        attempt.status = Attempt.Status.RUNNING
        fields.append("status")
    if is_newest and not attempt.is_ended:
        fields += _apply_metrics(attempt, metrics)
    if log_end is not None and log_end > attempt.log_bytes:
        attempt.log_bytes = log_end
        fields.append("log_bytes")
    return fields


@dataclass(frozen=True)
class HeartbeatSpec:
    experiment: Experiment
    identity: AttemptIdentity
    at: dt.datetime
    metrics: Metrics
    log_end: int | None = None


# Every field a heartbeat may change: a batch writes them all for every row.
_HEARTBEAT_FIELDS = (
    "last_heartbeat_at",
    "status",
    "wall_s",
    "cpu_s",
    "disk_bytes",
    "events_processed",
    "peak_rss_bytes",
    "cpu_efficiency",
    "log_bytes",
)


def attempts_record_heartbeats(
    *, heartbeats: list[HeartbeatSpec]
) -> list[Attempt | IdentityError | None]:
    """attempt_record_heartbeat for heartbeats of distinct attempts, with one
    locking SELECT and one UPDATE for all of them. Per heartbeat: its attempt;
    None when the attempt is not recorded yet (the caller applies that one on
    its own, which creates it); or the IdentityError the single path would
    raise (nothing of that heartbeat is applied)."""
    uids = [_UID.get_db_prep_value(h.identity.attempt, connection) for h in heartbeats]
    if len(set(uids)) != len(uids):
        raise ValueError("a batch of heartbeats must name each attempt once")
    marks = ", ".join(["%s"] * len(uids))
    found = rows.fetch_all(
        Attempt,
        f"SELECT {rows.select_list(Attempt, 'a')}, c.experiment_id, c.name, s.name, j.key, c.id "  # noqa: S608
        f"FROM {rows.table(Attempt)} a JOIN {rows.table(Job)} j ON j.id = a.job_id "
        f"JOIN {rows.table(Stage)} s ON s.id = j.stage_id "
        f"JOIN {rows.table(Campaign)} c ON c.id = s.campaign_id "
        f"WHERE a.uid IN ({marks}) ORDER BY a.id{rows.for_update('a')}",
        uids,
        extra=5,
    )
    by_uid = {}
    for attempt, names in found:
        attempt._names, attempt._campaign_id = names[:4], names[4]
        by_uid[attempt.uid] = attempt
    out: list[Attempt | IdentityError | None] = []
    for h in heartbeats:
        attempt = by_uid.get(h.identity.attempt)
        if attempt is not None:
            try:
                _check_identity(attempt, experiment=h.experiment, identity=h.identity)
            except IdentityError as exc:
                out.append(exc)
                continue
            _heartbeat_apply(attempt, at=h.at, metrics=h.metrics, log_end=h.log_end)
        out.append(attempt)
    rows.update_many([a for a in out if isinstance(a, Attempt)], _HEARTBEAT_FIELDS)
    return out


def _state_without_success(job: Job, *, excluding: Attempt) -> str:
    """A job with no good attempt runs while another attempt is open, else it failed."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {rows.table(Attempt)} WHERE job_id = %s AND id <> %s "  # noqa: S608
            "AND status IN (%s, %s) LIMIT 1",
            [job.pk, excluding.pk, *OPEN_STATUSES],
        )
        still_open = cursor.fetchone() is not None
    return Job.State.RUNNING if still_open else Job.State.FAILED


def _ended_at(attempt_id: int) -> dt.datetime | None:
    found = rows.fetch(
        Attempt,
        f"SELECT {rows.select_list(Attempt, 'a')} FROM {rows.table(Attempt)} a "  # noqa: S608
        "WHERE a.id = %s",
        [attempt_id],
    )
    return None if found is None else found[0].ended_at


def _mark_duplicate(attempt_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {rows.table(Attempt)} SET is_duplicate_completion = %s WHERE id = %s",  # noqa: S608
            [True, attempt_id],
        )


# What an end event may change on the attempt row.
_ATTEMPT_END_FIELDS = (
    "status",
    "ended_at",
    "exit_code",
    "signal",
    "reported_success",
    "started_at",
    "wall_s",
    "cpu_s",
    "cpu_efficiency",
    "peak_rss_bytes",
    "disk_bytes",
    "events_processed",
    "output_bytes",
    "log_bytes",
    "is_duplicate_completion",
)


def attempt_record_end(
    *,
    experiment: Experiment,
    identity: AttemptIdentity,
    at: dt.datetime,
    exit_code: int | None,
    signal: int | None,
    metrics: Metrics,
    outputs: Iterable[OutputSpec] = (),
    reported_success: bool | None = None,
    log_end: int | None = None,
) -> tuple[Attempt, bool]:
    """Record the end of an attempt. Returns (attempt, applied).

    `applied` is False when the attempt had already ended: the first end wins.
    A second successful attempt of a job that already succeeded is recorded as
    a duplicate completion and never counted twice.
    """
    job, attempt = _attempt_locked_with_job(experiment=experiment, identity=identity)
    if log_end is not None and log_end > attempt.log_bytes:
        attempt.log_bytes = log_end
    if attempt.is_ended:
        rows.update(attempt, ["log_bytes"])
        return attempt, False

    succeeded = _end_apply(
        attempt,
        at=at,
        exit_code=exit_code,
        signal=signal,
        metrics=metrics,
        reported_success=reported_success,
    )
    outputs = list(outputs)
    if outputs:
        attempt.output_bytes = sum(o.size for o in outputs)
        rows.insert_rows(OutputFile, _output_rows(attempt, job, outputs, at))

    if succeeded:
        if job.good_attempt_id is None:
            job.good_attempt = attempt
            job.state = Job.State.SUCCEEDED
        else:
            # The chosen completion is the first good one by its end, not by
            # when its event arrived (a spooled reporter can deliver late).
            job.duplicate_completions += 1  # the job row is locked
            chosen_end = _ended_at(job.good_attempt_id)
            if chosen_end is not None and at < chosen_end:
                _mark_duplicate(job.good_attempt_id)
                job.good_attempt = attempt
                attempt.replaced_completion = True
            else:
                attempt.is_duplicate_completion = True
    elif job.good_attempt_id is None:
        job.state = _state_without_success(job, excluding=attempt)
    rows.update(attempt, _ATTEMPT_END_FIELDS)
    rows.update(job, ["good_attempt", "state", "duplicate_completions", "updated_at"])
    return attempt, True


def _end_apply(
    attempt: Attempt,
    *,
    at: dt.datetime,
    exit_code: int | None,
    signal: int | None,
    metrics: Metrics,
    reported_success: bool | None,
) -> bool:
    """An end's changes to the locked, open attempt; whether it succeeded."""
    succeeded = exit_code == 0 and signal is None and reported_success is not False
    attempt.status = Attempt.Status.SUCCEEDED if succeeded else Attempt.Status.FAILED
    attempt.ended_at = at
    attempt.exit_code = exit_code
    attempt.signal = signal
    attempt.reported_success = reported_success
    if attempt.started_at is None:
        attempt.started_at = (
            at if metrics.wall_s is None else at - dt.timedelta(seconds=metrics.wall_s)
        )
    _apply_metrics(attempt, metrics)
    return succeeded


def _output_rows(attempt: Attempt, job: Job, outputs: list, at: dt.datetime) -> list[dict]:
    campaign_id = getattr(attempt, "_campaign_id", None) or job.stage.campaign_id
    return [
        {
            "attempt_id": attempt.pk,
            "job_id": job.pk,
            "stage_id": job.stage_id,
            "campaign_id": campaign_id,
            "name": o.name,
            "size": o.size,
            "checksum": o.checksum,
            "events": o.events,
            "parents": list(o.parents),
            "created_at": at,
        }
        for o in outputs
    ]


@dataclass(frozen=True)
class EndSpec:
    experiment: Experiment
    identity: AttemptIdentity
    at: dt.datetime
    exit_code: int | None
    signal: int | None
    metrics: Metrics
    outputs: tuple = ()
    reported_success: bool | None = None
    log_end: int | None = None


def attempts_record_ends(*, ends: list[EndSpec]) -> list[Attempt | IdentityError | None]:
    """attempt_record_end for the usual ends, together: an open attempt whose
    job has no good attempt yet, one end per job in the batch. One SELECT of
    the attempts, one locking the jobs, one locking the attempts, one for
    other open attempts of the failed ones' jobs, an INSERT of all outputs,
    one UPDATE of the attempts and one of the jobs. Per end: its Attempt
    (ended here); the IdentityError that refused it; or None where this path
    does not apply (an unseen or already ended attempt, a second success of a
    job, a second end of a job in the batch): the caller applies that one
    with attempt_record_end."""
    uids = [_UID.get_db_prep_value(x.identity.attempt, connection) for x in ends]
    if len(set(uids)) != len(uids):
        raise ValueError("a batch of ends must name each attempt once")
    marks = ", ".join(["%s"] * len(uids))
    names_sql = (
        f"SELECT {rows.select_list(Attempt, 'a')}, c.experiment_id, c.name, s.name, j.key, c.id "  # noqa: S608
        f"FROM {rows.table(Attempt)} a JOIN {rows.table(Job)} j ON j.id = a.job_id "
        f"JOIN {rows.table(Stage)} s ON s.id = j.stage_id "
        f"JOIN {rows.table(Campaign)} c ON c.id = s.campaign_id WHERE a.uid IN ({marks})"
    )
    out: list[Attempt | IdentityError | None] = [None] * len(ends)
    seen = {a.uid: a for a, _ in rows.fetch_all(Attempt, names_sql, uids, extra=5)}
    job_ids = sorted({a.job_id for a in seen.values()})
    if not job_ids:
        return out
    jobs = {
        j.pk: j
        for j, _ in rows.fetch_all(
            Job,
            f"SELECT {rows.select_list(Job, 'j')} FROM {rows.table(Job)} j "  # noqa: S608
            f"WHERE j.id IN ({', '.join(['%s'] * len(job_ids))}) ORDER BY j.id"
            f"{rows.for_update()}",
            job_ids,
        )
    }
    locked = {}
    for attempt, names in rows.fetch_all(
        Attempt, names_sql + f" ORDER BY a.id{rows.for_update('a')}", uids, extra=5
    ):
        attempt._names, attempt._campaign_id = names[:4], names[4]
        locked[attempt.uid] = attempt
    taken_jobs: set[int] = set()
    mine: list[tuple[int, Attempt, Job, bool]] = []
    for i, x in enumerate(ends):
        attempt = locked.get(x.identity.attempt)
        if attempt is None:
            continue
        try:
            _check_identity(attempt, experiment=x.experiment, identity=x.identity)
        except IdentityError as exc:
            out[i] = exc
            continue
        job = jobs[attempt.job_id]
        succeeded = x.exit_code == 0 and x.signal is None and x.reported_success is not False
        if attempt.is_ended or job.pk in taken_jobs or job.good_attempt_id is not None:
            continue
        taken_jobs.add(job.pk)
        if x.log_end is not None and x.log_end > attempt.log_bytes:
            attempt.log_bytes = x.log_end
        _end_apply(
            attempt,
            at=x.at,
            exit_code=x.exit_code,
            signal=x.signal,
            metrics=x.metrics,
            reported_success=x.reported_success,
        )
        attempt.job = job
        mine.append((i, attempt, job, succeeded))
    if not mine:
        return out
    failed = [(attempt, job) for _, attempt, job, ok in mine if not ok]
    still_open: set[int] = set()
    if failed:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT job_id FROM {rows.table(Attempt)} "  # noqa: S608
                f"WHERE job_id IN ({', '.join(['%s'] * len(failed))}) "
                f"AND id NOT IN ({', '.join(['%s'] * len(failed))}) AND status IN (%s, %s)",
                [*(j.pk for _, j in failed), *(a.pk for a, _ in failed), *OPEN_STATUSES],
            )
            still_open = {row[0] for row in cursor.fetchall()}
    outputs = []
    for i, attempt, job, ok in mine:
        x = ends[i]
        if x.outputs:
            attempt.output_bytes = sum(o.size for o in x.outputs)
            outputs += _output_rows(attempt, job, list(x.outputs), x.at)
        if ok:
            job.good_attempt = attempt
            job.state = Job.State.SUCCEEDED
        else:
            job.state = Job.State.RUNNING if job.pk in still_open else Job.State.FAILED
        out[i] = attempt
    rows.insert_rows(OutputFile, outputs)
    rows.update_many([a for _, a, _, _ in mine], _ATTEMPT_END_FIELDS)
    rows.update_many(
        [j for _, _, j, _ in mine], ["good_attempt", "state", "duplicate_completions", "updated_at"]
    )
    return out


def attempt_queue(*, job: Job, submission=None) -> Attempt:
    """Create a queued attempt for a job, as the submission layer does before
    handing it to a batch system. The uid is passed to the reporter."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        locked.attempt_count += 1
        if locked.good_attempt_id is None:
            locked.state = Job.State.QUEUED
        locked.save(update_fields=["attempt_count", "state", "updated_at"])
        return Attempt.objects.create(
            job=locked,
            number=locked.attempt_count,
            submission=submission,
            created_at=timezone.now(),
        )


# --- progress history ---------------------------------------------------------

PROGRESS_SAMPLE_INTERVAL = dt.timedelta(seconds=30)


def stage_progress_sample(*, stage_id: int, force: bool = False) -> StageProgressSample | None:
    """Record the stage's job counts now, at most once per interval unless forced."""
    from prodmon.selectors import stage_job_counts

    now = timezone.now()
    if (
        not force
        and StageProgressSample.objects.filter(
            stage_id=stage_id, at__gt=now - PROGRESS_SAMPLE_INTERVAL
        ).exists()
    ):
        return None
    if not Stage.objects.filter(pk=stage_id).exists():
        return None
    counts = stage_job_counts(stage_ids=[stage_id])[stage_id]
    return StageProgressSample.objects.create(stage_id=stage_id, at=now, **counts)


def stage_progress_sweep() -> int:
    """Sample every stage of an active campaign (the periodic catch-up)."""
    ids = Stage.objects.filter(campaign__state=Campaign.State.ACTIVE).values_list("pk", flat=True)
    return sum(stage_progress_sample(stage_id=sid) is not None for sid in ids)


# --- config snapshot archive --------------------------------------------------


def config_snapshot_archive(*, snapshot: ConfigSnapshot) -> bytes:
    """A tar.gz that reproduces the stage's configuration exactly.

    Layout: command.sh, environment.env, release.txt, files/<name> (original
    bytes), snapshot.json (the whole snapshot) and SHA256SUMS for every file.
    """
    import io
    import json
    import shlex
    import tarfile

    members: dict[str, bytes] = {
        "command.sh": f"#!/bin/sh\n{snapshot.command}\n".encode(),
        "environment.env": "".join(
            f"{k}={shlex.quote(str(v))}\n" for k, v in sorted(snapshot.environment.items())
        ).encode(),
        "release.txt": f"{snapshot.release}\n".encode(),
        "snapshot.json": json.dumps(
            {**snapshot.canonical(), "sha256": snapshot.sha256, "stage": str(snapshot.stage)},
            indent=2,
            sort_keys=True,
        ).encode(),
    }
    for item in snapshot.files:
        members[f"files/{item['name']}"] = item["content"].encode()
    members["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(members.items())
    ).encode()
    buf = io.BytesIO()
    mtime = int(snapshot.created_at.timestamp())
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name=f"stage-config-{snapshot.sha256[:12]}/{name}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o755 if name == "command.sh" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- post-hoc verdicts ----------------------------------------------------------


def attempt_fail_post_check(*, attempt_id: int, reason: str) -> Attempt:
    """Turn a succeeded attempt into a failure after a post-hoc check failed
    (missing or empty outputs, checksum mismatch, a stage's check command).

    If it was the job's good attempt, the next successful duplicate takes its
    place; otherwise the job is failed (or running while an attempt is open).
    """
    with transaction.atomic():
        job_id = Attempt.objects.values_list("job_id", flat=True).get(pk=attempt_id)
        job = Job.objects.select_for_update().get(pk=job_id)
        attempt = Attempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status != Attempt.Status.SUCCEEDED:
            return attempt
        attempt.status = Attempt.Status.FAILED
        attempt.reported_success = (
            False if attempt.reported_success is None else attempt.reported_success
        )
        was_duplicate = attempt.is_duplicate_completion
        attempt.is_duplicate_completion = False
        attempt.save(update_fields=["status", "reported_success", "is_duplicate_completion"])
        if was_duplicate:
            job.duplicate_completions = max(job.duplicate_completions - 1, 0)
        elif job.good_attempt_id == attempt.pk:
            successor = (
                Attempt.objects.select_for_update()
                .filter(job=job, status=Attempt.Status.SUCCEEDED, is_duplicate_completion=True)
                .order_by("ended_at", "number")
                .first()
            )
            if successor is not None:
                successor.is_duplicate_completion = False
                successor.save(update_fields=["is_duplicate_completion"])
                job.duplicate_completions = max(job.duplicate_completions - 1, 0)
                job.good_attempt = successor
            else:
                job.good_attempt = None
                job.state = _state_without_success(job, excluding=attempt)
        job.save(update_fields=["good_attempt", "state", "duplicate_completions", "updated_at"])
        audit_record(
            actor=None,
            action="attempt.fail_post_check",
            experiment=job.stage.campaign.experiment,
            target=attempt,
            params={"reason": reason},
            result="failed",
        )
        return attempt
