from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from prodmon import api, downloads, health, metrics, views
from prodmon.accounts import RateLimitedLoginView

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("healthz/noop", health.noop, name="noop"),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/docs/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/campaigns/", api.CampaignListApi.as_view(), name="api-campaign-list"),
    path("api/v1/jobs/", api.JobListApi.as_view(), name="api-job-list"),
    path("api/v1/attempts/<uuid:uid>/", api.AttemptDetailApi.as_view(), name="api-attempt-detail"),
    path("", include("logserver.urls")),
    path("", include("triage.urls")),
    path("", include("prodmon.progress.urls")),
    path("", include("prodmon.actions.urls")),
    path("", views.campaign_list, name="campaign-list"),
    path("campaigns/<int:pk>/", views.campaign_detail, name="campaign-detail"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("attempts/<uuid:uid>/", views.attempt_detail, name="attempt-detail"),
    path(
        "stages/<int:pk>/config.tar.gz",
        downloads.stage_config_archive,
        name="stage-config-archive",
    ),
]
