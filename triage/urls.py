from django.urls import path

from triage import api, views

urlpatterns = [
    path("errors/", views.error_summary, name="triage-summary"),
    path("errors/plotly.min.js", views.plotly_js, name="triage-plotly-js"),
    path("errors/rules/", views.rule_list, name="triage-rule-list"),
    path("errors/rules/new/", views.rule_create, name="triage-rule-create"),
    path("errors/rules/<int:pk>/edit/", views.rule_edit, name="triage-rule-edit"),
    path("errors/<int:pk>/", views.error_class_detail, name="triage-class-detail"),
    path("errors/<int:pk>/edit/", views.error_class_edit, name="triage-class-edit"),
    path("errors/<int:pk>/status/", views.error_class_status, name="triage-class-status"),
    path("errors/<int:pk>/promote/", views.error_class_promote, name="triage-class-promote"),
    path("api/v1/errors/", api.ErrorSummaryApi.as_view(), name="api-error-summary"),
    path("api/v1/errors/<int:pk>/", api.ErrorClassDetailApi.as_view(), name="api-error-class"),
]

# Node health and the exclusion exports (issue 5).
from triage import health_views  # noqa: E402

urlpatterns += [
    path("nodes/", health_views.node_overview, name="health-nodes"),
    path("nodes/<int:pk>/", health_views.node_detail, name="health-node-detail"),
    path("nodes/<int:pk>/set/", health_views.node_set, name="health-node-set"),
    path("attention/", health_views.attention, name="health-attention"),
    path(
        "exclusions/htcondor/",
        health_views.ExclusionExportApi.as_view(fmt="htcondor"),
        name="health-exclusions-htcondor",
    ),
    path(
        "exclusions/slurm/",
        health_views.ExclusionExportApi.as_view(fmt="slurm"),
        name="health-exclusions-slurm",
    ),
    path(
        "exclusions/json/",
        health_views.ExclusionExportApi.as_view(fmt="json"),
        name="health-exclusions-json",
    ),
    path(
        "api/v1/nodes/exclusions/",
        health_views.ExclusionExportApi.as_view(fmt="json"),
        name="api-node-exclusions",
    ),
]
