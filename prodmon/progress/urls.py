"""Progress pages and API, included at the site root."""

from django.urls import path, re_path

from prodmon.progress import api, views

urlpatterns = [
    path("progress/plotly.min.js", views.plotly_js, name="progress-plotly-js"),
    path("progress/stages/<int:pk>/", views.stage_detail, name="progress-stage"),
    path(
        "progress/stages/<int:pk>/inputs/",
        views.stage_inputs_declare,
        name="progress-stage-inputs",
    ),
    re_path(
        r"^progress/stages/(?P<pk>\d+)/(?P<which>missing|duplicates)\.(?P<fmt>txt|csv)$",
        views.stage_inputs_download,
        name="progress-stage-download",
    ),
    path("progress/estimate/", views.reprocessing_estimate, name="progress-estimate"),
    path("progress/reports/", views.report_page, name="progress-reports"),
    re_path(
        r"^progress/reports/efficiency\.(?P<fmt>csv|json|errors\.csv)$",
        views.report_export,
        name="progress-report-export",
    ),
    path("progress/notifications/", views.subscriptions, name="progress-subscriptions"),
    path(
        "api/v1/stages/<int:pk>/expected-inputs/",
        api.ExpectedInputsApi.as_view(),
        name="api-stage-expected-inputs",
    ),
    path(
        "api/v1/stages/<int:pk>/completeness/",
        api.StageCompletenessApi.as_view(),
        name="api-stage-completeness",
    ),
    path(
        "api/v1/stages/<int:pk>/resources/",
        api.StageResourcesApi.as_view(),
        name="api-stage-resources",
    ),
    path(
        "api/v1/campaigns/<int:pk>/progress/",
        api.CampaignProgressApi.as_view(),
        name="api-campaign-progress",
    ),
]
