from django.urls import path

from prodmon.actions import api, views

urlpatterns = [
    path("jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("actions/retry/", views.bulk_retry, name="bulk-retry"),
    path("actions/<int:pk>/", views.action_detail, name="action-detail"),
    path("actions/<int:pk>/cancel/", views.action_cancel, name="action-cancel"),
    path("api/v1/actions/<int:pk>/", api.BulkActionStatusApi.as_view(), name="api-action-status"),
    path("stages/<int:pk>/operations/", views.stage_operations, name="stage-operations"),
    path("stages/<int:pk>/launch/", views.stage_launch, name="stage-launch"),
    path("stages/<int:pk>/hold/", views.stage_hold, name="stage-hold"),
    path("stages/<int:pk>/release/", views.stage_release, name="stage-release"),
    path("stages/<int:pk>/finish/", views.stage_finish, name="stage-finish"),
    path("stages/<int:pk>/abort/", views.stage_abort, name="stage-abort"),
    path("stages/<int:pk>/recovery/", views.stage_recovery, name="stage-recovery"),
    path("submissions/<int:pk>/", views.submission_detail, name="submission-detail"),
    path("audit/", views.audit_list, name="audit-list"),
]
