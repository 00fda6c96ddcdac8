"""Forms for the triage pages. Choice lists are scoped to the user's experiments."""

from __future__ import annotations

import hashlib
import json

from django import forms
from django.core import signing

from triage import selectors
from triage.kb import Category
from triage.models import ErrorClass
from triage.regexguard import MAX_PATTERN_CHARS, UnsafePattern, compile_user_pattern, probe_pattern


class SummaryFilterForm(forms.Form):
    experiment = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    campaign = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    stage = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    site = forms.CharField(required=False, max_length=128)
    window = forms.ChoiceField(
        required=False,
        choices=[(k, k) for k in selectors.WINDOWS],
        initial=selectors.DEFAULT_WINDOW,
    )
    status = forms.ChoiceField(required=False)
    category = forms.ChoiceField(required=False)

    def __init__(self, data=None, *, experiment_ids: set[int], experiments, **kwargs):
        super().__init__(data, **kwargs)
        self.experiment_ids = experiment_ids
        self.fields["experiment"].choices = [("", "any experiment")] + [
            (e.pk, e.name) for e in experiments
        ]
        self.fields["campaign"].choices = [("", "any campaign")] + [
            (c.pk, f"{c.experiment.name}/{c.name}")
            for c in selectors.campaign_choices(experiment_ids=experiment_ids).order_by(
                "experiment__name", "name"
            )
        ]
        self.fields["stage"].choices = [("", "any stage")] + [
            (s.pk, f"{s.campaign.experiment.name}/{s.campaign.name}/{s.name}")
            for s in selectors.stage_choices(experiment_ids=experiment_ids).order_by(
                "campaign__experiment__name", "campaign__name", "order", "name"
            )
        ]
        self.fields["status"].choices = [("", "any status")] + list(ErrorClass.Status.choices)
        self.fields["category"].choices = [("", "any category")] + list(Category.CHOICES)

    def filters(self) -> selectors.SummaryFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return selectors.SummaryFilters(
            experiment_ids=self.experiment_ids,
            experiment=data.get("experiment"),
            campaign=data.get("campaign"),
            stage=data.get("stage"),
            site=(data.get("site") or "").strip(),
            window=data.get("window") or selectors.DEFAULT_WINDOW,
            status=data.get("status") or "",
            category=data.get("category") or "",
        )


class ErrorClassForm(forms.Form):
    title = forms.CharField(max_length=200)
    explanation = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What happened, in words a shifter understands.",
    )
    category = forms.ChoiceField(choices=Category.CHOICES)
    transient = forms.BooleanField(required=False, help_text="A retry is likely to help.")
    suggested_action = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    @classmethod
    def initial_for(cls, error_class: ErrorClass) -> dict:
        return {
            "title": error_class.title,
            "explanation": error_class.explanation,
            "category": error_class.category,
            "transient": error_class.transient,
            "suggested_action": error_class.suggested_action,
        }


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=ErrorClass.Status.choices)


def _int_list(value: str, label: str) -> str:
    items = [v.strip() for v in value.split(",") if v.strip()]
    for item in items:
        try:
            int(item)
        except ValueError as exc:
            raise forms.ValidationError(f"{label}: {item!r} is not a whole number.") from exc
    return ",".join(items)


class RuleForm(ErrorClassForm):
    """A signature rule and the class it names. Saving needs a fresh preview."""

    name = forms.CharField(max_length=200, help_text="Short name, shown in lists.")
    pattern = forms.CharField(
        max_length=MAX_PATTERN_CHARS,
        help_text="A Python regular expression, matched against each line of the log tail.",
        widget=forms.TextInput(attrs={"class": "mono", "spellcheck": "false"}),
    )
    ignore_case = forms.BooleanField(required=False)
    priority = forms.IntegerField(
        min_value=0,
        max_value=1000,
        initial=100,
        help_text="Higher wins. Built-in rules use 30-90.",
    )
    job_types = forms.CharField(
        required=False,
        max_length=200,
        help_text="Only for these stage job types (comma-separated).",
    )
    exit_codes = forms.CharField(
        required=False, max_length=200, help_text="Only for these exit codes (comma-separated)."
    )
    enabled = forms.BooleanField(required=False, initial=True)
    preview_token = forms.CharField(required=False, widget=forms.HiddenInput)

    field_order = [
        "name",
        "pattern",
        "ignore_case",
        "priority",
        "job_types",
        "exit_codes",
        "enabled",
        "title",
        "category",
        "transient",
        "explanation",
        "suggested_action",
    ]

    def __init__(self, *args, probe: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe = probe
        self.fields["title"].required = False
        self.fields["title"].help_text = "The class name shifters see; defaults to the rule name."

    def clean_pattern(self):
        pattern = self.cleaned_data["pattern"]
        try:
            compile_user_pattern(pattern, ignore_case=bool(self.data.get("ignore_case")))
            if self.probe:
                probe_pattern(pattern, ignore_case=bool(self.data.get("ignore_case")))
        except UnsafePattern as exc:
            raise forms.ValidationError(str(exc)) from exc
        return pattern

    def clean_job_types(self):
        return ",".join(
            t.strip() for t in self.cleaned_data.get("job_types", "").split(",") if t.strip()
        )

    def clean_exit_codes(self):
        return _int_list(self.cleaned_data.get("exit_codes", ""), "Exit codes")

    def rule_data(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "pattern": data["pattern"],
            "ignore_case": data["ignore_case"],
            "priority": data["priority"],
            "job_types": data["job_types"],
            "exit_codes": data["exit_codes"],
            "enabled": data["enabled"],
        }

    def class_data(self) -> dict:
        data = self.cleaned_data
        return {
            "title": data.get("title") or data["name"],
            "explanation": data.get("explanation", ""),
            "category": data["category"],
            "transient": data.get("transient", False),
            "suggested_action": data.get("suggested_action", ""),
        }

    def fingerprint(self, *, scope: str) -> str:
        """A digest of what the preview ran: the matching part of the rule."""
        data = self.cleaned_data
        blob = json.dumps(
            [
                scope,
                data["pattern"],
                data["ignore_case"],
                data["priority"],
                data["job_types"],
                data["exit_codes"],
            ]
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def signed_token(self, *, scope: str) -> str:
        return signing.dumps(self.fingerprint(scope=scope), salt="triage.rule-preview")

    def preview_is_current(self, *, scope: str, max_age: int = 3600) -> bool:
        token = self.cleaned_data.get("preview_token") or ""
        try:
            seen = signing.loads(token, salt="triage.rule-preview", max_age=max_age)
        except signing.BadSignature:
            return False
        return seen == self.fingerprint(scope=scope)


def pattern_from_template(template: str) -> str:
    """A starting regex for a cluster's template: literals escaped, variables loose."""
    import re

    parts = re.split(r"(<\*>|<[A-Z]+>)", template.strip())
    out = []
    for part in parts:
        if not part:
            continue
        if part == "<*>" or re.fullmatch(r"<[A-Z]+>", part):
            out.append(r"\S+")
        else:
            out.append(re.escape(part).replace(r"\ ", " "))
    pattern = "".join(out)
    if pattern.count(r"\S+") > 5:
        # Too loose to check safely: keep the longest literal stretch only.
        literals = [p for p in parts if p and not re.fullmatch(r"<\*>|<[A-Z]+>", p)]
        pattern = re.escape(max(literals, key=len).strip()) if literals else ""
    # Drop leading/trailing variable parts; they add nothing to a search.
    while pattern.startswith(r"\S+"):
        pattern = pattern[3:].lstrip()
    while pattern.endswith(r"\S+"):
        pattern = pattern[:-3].rstrip()
    return pattern[:MAX_PATTERN_CHARS]
