from django.urls import path

from logserver import api, views

urlpatterns = [
    path("api/v1/ingest/start/", api.StartApi.as_view(), name="ingest-start"),
    path("api/v1/ingest/heartbeat/", api.HeartbeatApi.as_view(), name="ingest-heartbeat"),
    path("api/v1/ingest/end/", api.EndApi.as_view(), name="ingest-end"),
    path("api/v1/ingest/bulk/", api.BulkApi.as_view(), name="ingest-bulk"),
    path("reporter/prodmon-report.py", views.reporter_download, name="reporter-download"),
]
