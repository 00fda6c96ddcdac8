from django.urls import path

from logserver import api, views

urlpatterns = [
    path(
        "api/v1/ingest/start/",
        api.queued_fast_path("start", api.StartApi.as_view()),
        name="ingest-start",
    ),
    path(
        "api/v1/ingest/heartbeat/",
        api.queued_fast_path("heartbeat", api.HeartbeatApi.as_view()),
        name="ingest-heartbeat",
    ),
    path(
        "api/v1/ingest/end/",
        api.queued_fast_path("end", api.EndApi.as_view()),
        name="ingest-end",
    ),
    path("api/v1/ingest/bulk/", api.BulkApi.as_view(), name="ingest-bulk"),
    path("api/v1/attempts/<uuid:uid>/log", api.AttemptLogApi.as_view(), name="api-attempt-log"),
    path("api/v1/logs/search", api.LogSearchApi.as_view(), name="api-log-search"),
    path("loki/api/v1/push", api.LokiPushApi.as_view(), name="loki-push"),
    path("reporter/prodmon-report.py", views.reporter_download, name="reporter-download"),
    path("attempts/<uuid:uid>/log", views.log_viewer, name="log-viewer"),
    path("attempts/<uuid:uid>/log/lines", views.log_lines, name="log-lines"),
    path("attempts/<uuid:uid>/log/download", views.log_download, name="log-download"),
    path("logs/search", views.log_search_page, name="log-search"),
]
