"""Notifications by e-mail and webhook.

`notify(kind=..., experiment=..., subject=..., body=..., url=...)` is the one
entry point, for this app (stage and campaign done, failure spikes) and for
others (triage: a new error class; node health: a black hole). It writes one
Notification row per subscriber and channel and returns at once; delivery
happens in Celery tasks after the commit, never in the caller's request.

- Who: active NotificationSubscriptions of the experiment that list the kind,
  whose user is still a member (or a superuser).
- Rate limit: at most PRODMON_NOTIFY_MAX_PER_HOUR per subscription, kind and
  channel in any hour; the rest are recorded as "suppressed", never sent.
- Once only: with a `key`, a subscriber gets that key at most once per channel.
- Delivery claims the row (pending -> sending, with a lease); a failure is
  logged and retried with exponential backoff up to PRODMON_NOTIFY_MAX_TRIES,
  by a re-enqueued task or, with no broker, by the periodic sweep.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from prodmon.models import (
    Experiment,
    Membership,
    Notification,
    NotificationKind,
    NotificationSubscription,
)
from prodmon.progress.conf import setting

logger = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=10)  # a claimed row not finished by then is tried again


class DeliveryError(Exception):
    """A channel refused or could not take the message."""


def absolute_url(url: str) -> str:
    if url.startswith("/"):
        return setting("PRODMON_PUBLIC_URL").rstrip("/") + url
    return url


def _recipients(experiment_id: int, kind: str) -> list[NotificationSubscription]:
    subs = list(
        NotificationSubscription.objects.select_related("user").filter(
            experiment_id=experiment_id, is_active=True, user__is_active=True
        )
    )
    members = set(
        Membership.objects.filter(experiment_id=experiment_id).values_list("user_id", flat=True)
    )
    return [
        s for s in subs if kind in (s.kinds or []) and (s.user_id in members or s.user.is_superuser)
    ]


def _channels(sub: NotificationSubscription) -> list[str]:
    channels = []
    if sub.by_email and sub.user.email:
        channels.append(Notification.Channel.EMAIL)
    if sub.webhook_url:
        channels.append(Notification.Channel.WEBHOOK)
    return channels


def _create_for(
    sub: NotificationSubscription, *, kind: str, subject: str, body: str, url: str, key: str
) -> list[Notification]:
    now = timezone.now()
    limit = int(setting("PRODMON_NOTIFY_MAX_PER_HOUR"))
    created = []
    # Lock the subscription: concurrent notify() calls count the rate one at a time.
    NotificationSubscription.objects.select_for_update().filter(pk=sub.pk).first()
    for channel in _channels(sub):
        if (
            key
            and Notification.objects.filter(
                subscription=sub, channel=channel, dedup_key=key
            ).exists()
        ):
            continue
        recent = (
            Notification.objects.filter(
                subscription=sub,
                kind=kind,
                channel=channel,
                created_at__gte=now - dt.timedelta(hours=1),
            )
            .exclude(state=Notification.State.SUPPRESSED)
            .count()
        )
        state = Notification.State.SUPPRESSED if recent >= limit else Notification.State.PENDING
        try:
            with transaction.atomic():
                created.append(
                    Notification.objects.create(
                        subscription=sub,
                        kind=kind,
                        channel=channel,
                        subject=subject[:300],
                        body=body,
                        url=url[:500],
                        dedup_key=key[:200],
                        state=state,
                        created_at=now,
                        next_try_at=now,
                    )
                )
        except IntegrityError:
            continue  # the same key was just queued by a concurrent call
    return created


def notify(
    *,
    kind: str,
    experiment: Experiment | int,
    subject: str,
    body: str = "",
    url: str = "",
    key: str = "",
) -> list[Notification]:
    """Queue a notification of `kind` to the experiment's subscribers.

    Returns the rows written (suppressed ones included). Never raises: a
    failure here is logged, so a caller's work (ingestion, classification)
    is never blocked by notifications.
    """
    experiment_id = experiment if isinstance(experiment, int) else experiment.pk
    if kind not in NotificationKind.values:
        logger.error("notify: unknown kind %r (subject %r)", kind, subject)
        return []
    try:
        with transaction.atomic():
            created = []
            for sub in _recipients(experiment_id, kind):
                created += _create_for(sub, kind=kind, subject=subject, body=body, url=url, key=key)
    except Exception:  # noqa: BLE001 - notifications must never break the caller
        logger.exception("notify(%s) for experiment %s failed", kind, experiment_id)
        return []
    for n in created:
        if n.state == Notification.State.PENDING:
            transaction.on_commit(lambda pk=n.pk: _enqueue(pk))
    return created


def _enqueue(notification_id: int, countdown: float | None = None) -> None:
    from prodmon.progress.tasks import notification_deliver_task

    try:
        if countdown:
            notification_deliver_task.apply_async((notification_id,), countdown=countdown)
        else:
            notification_deliver_task.delay(notification_id)
    except Exception:  # noqa: BLE001 - broker down: the periodic sweep delivers it later
        logger.exception("could not enqueue delivery of notification %s", notification_id)


# --- delivery -------------------------------------------------------------------------


def _send_email(n: Notification) -> None:
    lines = [n.body.strip()] if n.body.strip() else []
    if n.url:
        lines.append(absolute_url(n.url))
    lines.append(
        f"\n-- \nprodmon: you get this because you subscribed to “{n.get_kind_display()}” "
        f"notifications of {n.subscription.experiment.name}."
    )
    sent = send_mail(
        subject=f"[prodmon {n.subscription.experiment.name}] {n.subject}",
        message="\n\n".join(lines),
        from_email=None,
        recipient_list=[n.subscription.user.email],
    )
    if sent != 1:
        raise DeliveryError("the e-mail backend accepted no message")


def webhook_payload(n: Notification) -> bytes:
    return json.dumps(
        {
            "kind": n.kind,
            "experiment": n.subscription.experiment.name,
            "subject": n.subject,
            "body": n.body,
            "url": absolute_url(n.url) if n.url else None,
            "created_at": n.created_at.isoformat(),
            "id": n.pk,
        },
        sort_keys=True,
    ).encode()


def webhook_signature(secret: str, payload: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def _post_webhook(n: Notification) -> None:
    payload = webhook_payload(n)
    headers = {"Content-Type": "application/json", "User-Agent": "prodmon-notify/1"}
    if n.subscription.webhook_secret:
        headers["X-Prodmon-Signature"] = webhook_signature(n.subscription.webhook_secret, payload)
    request = urllib.request.Request(
        n.subscription.webhook_url, data=payload, headers=headers, method="POST"
    )
    timeout = float(setting("PRODMON_WEBHOOK_TIMEOUT_SECONDS"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryError(f"webhook unreachable: {exc}") from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook answered HTTP {status}")


def notification_deliver(*, notification_id: int) -> str:
    """Try to send one notification. Returns sent, retry, failed or skipped."""
    now = timezone.now()
    claimed = Notification.objects.filter(
        pk=notification_id, state=Notification.State.PENDING, next_try_at__lte=now
    ).update(state=Notification.State.SENDING, tries=F("tries") + 1, next_try_at=now + LEASE)
    if claimed != 1:
        return "skipped"  # sent, suppressed, not due, or another worker has it
    n = Notification.objects.select_related("subscription__user", "subscription__experiment").get(
        pk=notification_id
    )
    try:
        if n.channel == Notification.Channel.EMAIL:
            _send_email(n)
        else:
            _post_webhook(n)
    except Exception as exc:  # noqa: BLE001 - any failure of a channel is retried
        max_tries = int(setting("PRODMON_NOTIFY_MAX_TRIES"))
        n.last_error = str(exc)[:2000]
        if n.tries >= max_tries:
            n.state = Notification.State.FAILED
            logger.error("notification %s failed for good after %s tries: %s", n.pk, n.tries, exc)
            n.save(update_fields=["state", "last_error"])
            return "failed"
        delay = float(setting("PRODMON_NOTIFY_BACKOFF_SECONDS")) * 2 ** (n.tries - 1)
        n.state = Notification.State.PENDING
        n.next_try_at = timezone.now() + dt.timedelta(seconds=delay)
        n.save(update_fields=["state", "last_error", "next_try_at"])
        logger.warning(
            "notification %s (%s) try %s failed, next in %.0fs: %s",
            n.pk,
            n.channel,
            n.tries,
            delay,
            exc,
        )
        if not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
            # With a broker, retry on time; in-process (embedded) the sweep does.
            _enqueue(n.pk, countdown=delay)
        return "retry"
    n.state = Notification.State.SENT
    n.sent_at = timezone.now()
    n.save(update_fields=["state", "sent_at"])
    return "sent"


def notifications_deliver_due(*, limit: int = 200) -> int:
    """Deliver what is due: retries whose backoff has passed, rows whose task
    was never enqueued, and claims whose worker died (lease expired)."""
    now = timezone.now()
    Notification.objects.filter(state=Notification.State.SENDING, next_try_at__lt=now).update(
        state=Notification.State.PENDING
    )
    due = list(
        Notification.objects.filter(Q(state=Notification.State.PENDING), next_try_at__lte=now)
        .order_by("next_try_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(notification_deliver(notification_id=pk) == "sent" for pk in due)
