from django import forms
from django.contrib import admin

from triage.models import (
    AttemptClassification,
    CustomExitCode,
    ErrorClass,
    SignatureRule,
    SuccessCheck,
    TemplateMinerState,
    TriageSettings,
)
from triage.regexguard import UnsafePattern, compile_user_pattern, probe_pattern


@admin.register(TriageSettings)
class TriageSettingsAdmin(admin.ModelAdmin):
    list_display = ["experiment", "code_families", "updated_at"]


@admin.register(ErrorClass)
class ErrorClassAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "experiment",
        "source",
        "category",
        "transient",
        "status",
        "times_seen",
        "last_seen",
    ]
    list_filter = ["experiment", "source", "category", "status", "transient"]
    search_fields = ["title", "key", "template"]
    raw_id_fields = ["merged_into", "named_by"]
    readonly_fields = ["times_seen", "first_seen", "last_seen", "created_at"]


class SignatureRuleAdminForm(forms.ModelForm):
    class Meta:
        model = SignatureRule
        fields = [
            "experiment",
            "error_class",
            "name",
            "pattern",
            "ignore_case",
            "priority",
            "job_types",
            "exit_codes",
            "enabled",
            "created_by",
            "updated_by",
        ]

    def clean(self):
        data = super().clean()
        if data.get("pattern"):
            try:
                compile_user_pattern(data["pattern"], ignore_case=data.get("ignore_case", False))
                probe_pattern(data["pattern"], ignore_case=data.get("ignore_case", False))
            except UnsafePattern as exc:
                self.add_error("pattern", str(exc))
        return data


@admin.register(SignatureRule)
class SignatureRuleAdmin(admin.ModelAdmin):
    """Shifters use /errors/rules/ (with its preview); this is for admins."""

    form = SignatureRuleAdminForm
    list_display = ["name", "experiment", "pattern", "priority", "enabled", "updated_at"]
    list_filter = ["experiment", "enabled"]
    search_fields = ["name", "pattern"]
    raw_id_fields = ["error_class", "created_by", "updated_by"]


@admin.register(AttemptClassification)
class AttemptClassificationAdmin(admin.ModelAdmin):
    list_display = ["attempt", "error_class", "source", "site", "seen_at"]
    list_filter = ["experiment", "source"]
    raw_id_fields = ["attempt", "error_class", "rule", "node", "campaign", "stage"]


@admin.register(CustomExitCode)
class CustomExitCodeAdmin(admin.ModelAdmin):
    list_display = ["experiment", "code", "family", "title", "category", "transient"]
    list_filter = ["experiment", "category"]
    search_fields = ["title"]


@admin.register(SuccessCheck)
class SuccessCheckAdmin(admin.ModelAdmin):
    list_display = ["name", "experiment", "campaign", "stage", "timeout_s", "enabled"]
    list_filter = ["experiment", "enabled"]
    raw_id_fields = ["campaign", "stage"]


@admin.register(TemplateMinerState)
class TemplateMinerStateAdmin(admin.ModelAdmin):
    list_display = ["experiment", "version", "updated_at"]
    readonly_fields = ["experiment", "version", "updated_at"]
    exclude = ["state"]
