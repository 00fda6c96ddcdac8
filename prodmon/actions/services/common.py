"""What the action layer's service modules share: the refusal exception, who
did it, and small stage facts."""

from django.contrib.auth.models import AbstractBaseUser

from prodmon.actions import rules
from prodmon.models import Attempt, Stage, Submission
from prodmon.submission.base import backend_name_for
from prodmon.submission.config import setting

OPEN_STATUSES = (Attempt.Status.QUEUED, Attempt.Status.RUNNING)
MESSAGES_MAX = 200
SYSTEM_LABEL = "prodmon"


class ActionRefused(Exception):
    """An action that must not happen; `message` says why, in an operator's words."""

    def __init__(self, message: str, code: str = "refused"):
        super().__init__(message)
        self.message = message
        self.code = code


def actor_label_for(actor: AbstractBaseUser | None, actor_label: str = "") -> str:
    if actor_label:
        return actor_label
    if actor is not None and actor.is_authenticated:
        return actor.get_username()
    return SYSTEM_LABEL


def user_or_none(actor):
    return actor if actor is not None and actor.is_authenticated else None


def stage_backend_name(stage: Stage) -> str:
    return backend_name_for(
        stage_backend=stage.submission_backend,
        experiment_backend=stage.campaign.experiment.submission_backend,
    )


def stage_initial_submission(stage: Stage) -> Submission | None:
    return (
        Submission.objects.filter(stage=stage, kind=Submission.Kind.INITIAL)
        .order_by("launched_at", "pk")
        .first()
    )


def stage_open_or_refuse(stage: Stage) -> None:
    if stage.state in rules.CLOSED_STAGE_STATES:
        raise ActionRefused(rules.CLOSED_STAGE_STATES[stage.state], code="stage_closed")


def backout_seconds(delay_s: float | None) -> float:
    if delay_s is None:
        return float(setting("PRODMON_LAUNCH_BACKOUT_SECONDS"))
    return float(delay_s)
