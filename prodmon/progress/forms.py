"""Forms of the progress pages. Every choice list is scoped to the user's experiments."""

import datetime as dt

from django import forms

from prodmon.models import Campaign, Experiment, NotificationKind
from prodmon.progress.reports import GROUPINGS

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class ExpectedInputsForm(forms.Form):
    names = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "one file name per line"}),
        required=False,
        label="File names",
    )
    upload = forms.FileField(
        required=False, label="…or a text file", help_text="one file name per line"
    )
    note = forms.CharField(required=False, max_length=200, label="Note")

    def clean(self):
        data = super().clean()
        upload = data.get("upload")
        text = data.get("names") or ""
        if upload is not None:
            if upload.size > MAX_UPLOAD_BYTES:
                raise forms.ValidationError(
                    f"the file is larger than {MAX_UPLOAD_BYTES // 1024**2} MiB"
                )
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise forms.ValidationError("the file is not UTF-8 text") from exc
            data["source"] = "upload"
        else:
            data["source"] = "form"
        if not text.strip():
            raise forms.ValidationError("give the file names, or a file that lists them")
        data["text"] = text
        return data


class ReportFilterForm(forms.Form):
    experiment = forms.ModelChoiceField(
        queryset=Experiment.objects.none(), required=False, empty_label="all my experiments"
    )
    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.none(), required=False, empty_label="all campaigns"
    )
    site = forms.CharField(required=False, max_length=128)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="inclusive",
    )
    by = forms.ChoiceField(choices=[(g, g) for g in GROUPINGS], required=False)

    def __init__(self, *args, experiment_ids: set[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["experiment"].queryset = Experiment.objects.filter(pk__in=experiment_ids)
        self.fields["campaign"].queryset = (
            Campaign.objects.filter(experiment_id__in=experiment_ids)
            .select_related("experiment")
            .order_by("experiment__name", "name")
        )

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("the start is after the end")
        if until and since is None:
            data["since"] = until - dt.timedelta(days=27)
        return data


class EstimateForm(forms.Form):
    job_type = forms.ChoiceField(choices=())
    inputs = forms.IntegerField(min_value=1, max_value=10_000_000, label="Inputs (jobs)")
    slots = forms.IntegerField(
        min_value=1,
        max_value=1_000_000,
        required=False,
        help_text="blank: as many as this job type has running now",
    )

    def __init__(self, *args, job_types: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["job_type"].choices = [(t, t) for t in job_types]


class SubscriptionForm(forms.Form):
    kinds = forms.MultipleChoiceField(
        choices=NotificationKind.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    by_email = forms.BooleanField(required=False, label="by e-mail")
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https")
    webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        widget=forms.PasswordInput(render_value=False),
        help_text="blank keeps the current secret",
    )
    weekly_report = forms.BooleanField(required=False, label="weekly efficiency report")
