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
