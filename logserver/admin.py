from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from logserver import queue, services
from logserver.models import (
    FullLog,
    IngestEvent,
    IngestToken,
    LogIndexCursor,
    LogRetentionPolicy,
)


class TokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=IngestToken.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=["ingest"]
    )

    class Meta:
        model = IngestToken
        fields = ["experiment", "name", "scopes"]


@admin.register(IngestToken)
class IngestTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "experiment",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["experiment"]
    actions = ["revoke"]
    readonly_fields = [
        "prefix",
        "token_hash",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = TokenCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["experiment", "name", "scopes"]
        return ["experiment", "name", "scopes", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = services.token_create(
            experiment=form.cleaned_data["experiment"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            created_by=request.user,
        )
        obj.pk = token.pk
        obj.refresh_from_db()
        messages.warning(request, f"Token {raw} — copy it now, it is shown only once.")

    @admin.action(description="Revoke the selected tokens now")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            services.token_revoke(token=token, revoked_by=request.user)
        self.message_user(request, f"revoked at {timezone.now():%H:%M:%S} UTC")


@admin.register(LogRetentionPolicy)
class LogRetentionPolicyAdmin(admin.ModelAdmin):
    list_display = ["experiment", "tail_days", "full_log_days", "updated_at"]


@admin.register(FullLog)
class FullLogAdmin(admin.ModelAdmin):
    list_display = ["attempt", "size", "stored_size", "backend", "uploaded_at"]
    readonly_fields = [
        "attempt",
        "backend",
        "storage_key",
        "size",
        "stored_size",
        "sha256",
        "uploaded_at",
    ]
    search_fields = ["attempt__uid", "sha256"]

    def has_add_permission(self, request):
        return False


@admin.register(LogIndexCursor)
class LogIndexCursorAdmin(admin.ModelAdmin):
    list_display = [
        "attempt",
        "indexed_upto",
        "next_line",
        "finished",
        "first_error_line",
        "updated_at",
        "purged_at",
    ]
    list_filter = ["finished", "experiment"]
    readonly_fields = [f.name for f in LogIndexCursor._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(IngestEvent)
class IngestEventAdmin(admin.ModelAdmin):
    """Ingested events; in the queued mode, those waiting or rejected, with why."""

    list_display = ["event_id", "experiment", "kind", "state", "note", "received_at"]
    list_filter = ["state", "kind", "experiment"]
    search_fields = ["event_id"]
    readonly_fields = [f.name for f in IngestEvent._meta.fields]
    actions = ["requeue"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Queue the selected rejected events again")
    def requeue(self, request, queryset):
        count = queue.rejected_requeue(
            ids=queryset.values_list("pk", flat=True), actor=request.user
        )
        self.message_user(request, f"{count} rejected events queued again")
