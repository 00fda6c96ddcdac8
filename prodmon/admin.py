from django.contrib import admin

from prodmon.models import (
    Attempt,
    AuditEntry,
    BatchEvent,
    BulkAction,
    Campaign,
    ConfigSnapshot,
    Experiment,
    Job,
    Membership,
    Node,
    OutputFile,
    Stage,
    Submission,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "created_at"]
    inlines = [MembershipInline]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "experiment", "state", "created_at"]
    list_filter = ["experiment", "state"]


@admin.register(Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = ["name", "campaign", "order", "job_type", "expected_jobs", "state"]
    list_filter = ["campaign__experiment", "state"]


@admin.register(ConfigSnapshot)
class ConfigSnapshotAdmin(admin.ModelAdmin):
    list_display = ["stage", "release", "sha256", "created_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # snapshots are immutable once taken


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["key", "stage", "state", "attempt_count", "duplicate_completions"]
    list_filter = ["state", "stage__campaign__experiment"]
    search_fields = ["key"]
    raw_id_fields = ["stage", "good_attempt"]


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ["uid", "job", "number", "status", "node", "exit_code", "signal"]
    list_filter = ["status"]
    search_fields = ["uid", "job__key"]
    raw_id_fields = ["job", "node", "submission"]


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["hostname", "site", "last_seen"]
    list_filter = ["site"]
    search_fields = ["hostname"]


admin.site.register(Submission)
admin.site.register(BulkAction)
admin.site.register(BatchEvent)
admin.site.register(OutputFile)
admin.site.register(Membership)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "target_type", "target_id", "result"]
    list_filter = ["action"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
