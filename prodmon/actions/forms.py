"""Forms of the action pages. Every one that submits work carries an idempotency
key (a hidden field made when the page is rendered), so a double click or a
re-sent form is one request."""

import hashlib
import uuid

from django import forms
from django.core.validators import RegexValidator

from prodmon.actions.selectors import RECOVERY_TYPES

key_validator = RegexValidator(r"^[A-Za-z0-9_-]{8,64}$", "not a valid form key")


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def selection_digest(job_ids) -> str:
    """A digest of the exact set of jobs shown for confirmation."""
    blob = ",".join(str(pk) for pk in sorted(job_ids))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class IdempotentForm(forms.Form):
    idempotency_key = forms.CharField(widget=forms.HiddenInput, validators=[key_validator])


class RetryForm(IdempotentForm):
    force = forms.BooleanField(required=False)
    more_resources = forms.BooleanField(required=False)
    next = forms.CharField(required=False, widget=forms.HiddenInput)


class BulkRetryForm(IdempotentForm):
    selection = forms.CharField(widget=forms.HiddenInput)
    force = forms.BooleanField(required=False, widget=forms.HiddenInput)
    more_resources = forms.BooleanField(
        required=False, label="Ask for more memory and time (suggested values or ×1.5)"
    )


class RecoveryForm(IdempotentForm):
    recovery_type = forms.ChoiceField(choices=list(RECOVERY_TYPES.items()))
    selection = forms.CharField(widget=forms.HiddenInput)
    force = forms.BooleanField(required=False, widget=forms.HiddenInput)


class LaunchForm(IdempotentForm):
    pass
