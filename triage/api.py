"""Triage JSON: the error summary and one error class, scoped like the pages.

A token needs the `read` scope and sees its own experiment; a logged-in user
sees the experiments they are a member of (prodmon.api.caller_experiment_ids).
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from prodmon.api import caller_experiment_ids
from triage import selectors
from triage.kb import Category
from triage.models import AttemptClassification, ErrorClass
from triage.views import class_jobs_params, jobs_url


class ErrorClassSerializer(serializers.ModelSerializer):
    experiment = serializers.CharField(source="experiment.name")
    url = serializers.SerializerMethodField()

    class Meta:
        model = ErrorClass
        fields = [
            "id",
            "experiment",
            "key",
            "source",
            "title",
            "explanation",
            "category",
            "transient",
            "suggested_action",
            "status",
            "times_seen",
            "first_seen",
            "last_seen",
            "template",
            "url",
        ]

    def get_url(self, obj) -> str:
        return reverse("triage-class-detail", args=[obj.pk])


class ErrorSummaryApi(APIView):
    """Failures and wall time lost per error class, and the stage x site matrix."""

    class ErrorSummaryInputSerializer(serializers.Serializer):
        # Ids are 64-bit: a larger number is a 400 naming the field, not an
        # overflow in the database driver (SQLite raises on it).
        experiment = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
        campaign = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
        stage = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
        site = serializers.CharField(required=False, allow_blank=True, max_length=128)
        window = serializers.ChoiceField(
            choices=list(selectors.WINDOWS), required=False, default=selectors.DEFAULT_WINDOW
        )
        status = serializers.ChoiceField(
            choices=ErrorClass.Status.values, required=False, allow_blank=True
        )
        category = serializers.ChoiceField(
            choices=list(Category.VALUES), required=False, allow_blank=True
        )

    class ErrorSummaryRowSerializer(serializers.Serializer):
        error_class = ErrorClassSerializer()
        failures = serializers.IntegerField()
        wall_s = serializers.FloatField()
        core_s = serializers.FloatField()
        first_seen = serializers.DateTimeField()
        last_seen = serializers.DateTimeField()
        jobs_url = serializers.CharField()

    class ErrorMatrixCellSerializer(serializers.Serializer):
        stage_id = serializers.IntegerField()
        stage = serializers.CharField(allow_null=True)
        campaign = serializers.CharField(allow_null=True)
        site = serializers.CharField(allow_blank=True)
        failures = serializers.IntegerField()
        wall_s = serializers.FloatField()
        top_class_id = serializers.IntegerField(allow_null=True)
        jobs_url = serializers.CharField()

    class ErrorSummaryOutputSerializer(serializers.Serializer):
        filters = serializers.DictField()
        total_failures = serializers.IntegerField()
        total_wall_s = serializers.FloatField()
        jobs_url = serializers.CharField()
        classes = serializers.ListField(child=serializers.DictField())
        matrix = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        operation_id="errors_summary",
        parameters=[ErrorSummaryInputSerializer],
        responses=ErrorSummaryOutputSerializer,
    )
    def get(self, request):
        experiment_ids = caller_experiment_ids(request)
        params = self.ErrorSummaryInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        filters = selectors.SummaryFilters(
            experiment_ids=experiment_ids,
            **{k: v for k, v in params.validated_data.items() if v not in (None, "")},
        )
        summary = selectors.error_summary(filters=filters)
        job_params = filters.job_table_params()
        rows = [
            {
                "error_class": r.error_class,
                "failures": r.failures,
                "wall_s": r.wall_s,
                "core_s": r.core_s,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "jobs_url": jobs_url(class_jobs_params(r.error_class, job_params)),
            }
            for r in summary.rows
        ]
        stages = {s.pk: s for s in summary.stages}
        matrix = self.ErrorMatrixCellSerializer(
            [
                {
                    "stage_id": stage_id,
                    "stage": stages[stage_id].name if stage_id in stages else None,
                    "campaign": stages[stage_id].campaign.name if stage_id in stages else None,
                    "site": site,
                    "failures": cell.failures,
                    "wall_s": cell.wall_s,
                    "top_class_id": cell.top_class.pk if cell.top_class else None,
                    "jobs_url": jobs_url({**job_params, "stage": str(stage_id), "site": site}),
                }
                for (stage_id, site), cell in sorted(summary.matrix.items())
            ],
            many=True,
        ).data
        return Response(
            {
                "filters": {
                    k: getattr(filters, k)
                    for k in ("experiment", "campaign", "stage", "site", "window", "status")
                },
                "total_failures": summary.total_failures,
                "total_wall_s": summary.total_wall_s,
                "jobs_url": jobs_url(job_params),
                "classes": self.ErrorSummaryRowSerializer(rows, many=True).data,
                "matrix": matrix,
            }
        )


class ErrorClassDetailApi(APIView):
    """One class: its trend (24 h hourly, 14 d daily), what it affects, and samples."""

    class ErrorClassSampleSerializer(serializers.ModelSerializer):
        attempt = serializers.UUIDField(source="attempt.uid")
        job = serializers.CharField(source="attempt.job.key")
        campaign = serializers.CharField(source="campaign.name")
        stage = serializers.CharField(source="stage.name")
        host = serializers.CharField(source="node.hostname", default=None)
        rule = serializers.CharField(source="rule.name", default=None)

        class Meta:
            model = AttemptClassification
            fields = [
                "attempt",
                "job",
                "campaign",
                "stage",
                "host",
                "site",
                "seen_at",
                "wall_s",
                "source",
                "rule",
                "detail",
                "line",
                "line_number",
                "line_is_absolute",
                "span_start",
                "span_end",
                "excerpt",
            ]

    class ErrorClassDetailOutputSerializer(serializers.Serializer):
        error_class = ErrorClassSerializer()
        merged_into = serializers.IntegerField(allow_null=True)
        jobs_url = serializers.CharField()
        trend = serializers.DictField(
            child=serializers.ListField(child=serializers.DictField()),
            help_text='{"24h": [{"start", "failures"}] hourly, "14d": [...] daily}',
        )
        affected = serializers.DictField(
            child=serializers.ListField(child=serializers.DictField()),
            help_text="campaigns, stages, sites and nodes with their failure counts",
        )
        samples = serializers.ListField(child=serializers.DictField())

    @extend_schema(operation_id="errors_class_retrieve", responses=ErrorClassDetailOutputSerializer)
    def get(self, request, pk: int):
        error_class = selectors.error_class_get(
            pk=pk, experiment_ids=caller_experiment_ids(request)
        )
        if error_class is None:
            raise NotFound("no such error class in your experiments")
        trend = selectors.error_class_trend(error_class=error_class)
        affected = selectors.error_class_affected(error_class=error_class)
        samples = selectors.error_class_samples(error_class=error_class)
        return Response(
            {
                "error_class": ErrorClassSerializer(error_class).data,
                "merged_into": error_class.merged_into_id,
                "jobs_url": jobs_url(class_jobs_params(error_class)),
                "trend": {
                    name: [
                        {"start": t.isoformat(), "failures": n}
                        for t, n in zip(series.labels, series.counts, strict=True)
                    ]
                    for name, series in (("24h", trend["hourly"]), ("14d", trend["daily"]))
                },
                "affected": {
                    "campaigns": [
                        {"id": r["campaign_id"], "name": r["campaign__name"], "failures": r["n"]}
                        for r in affected.campaigns
                    ],
                    "stages": [
                        {
                            "id": r["stage_id"],
                            "name": r["stage__name"],
                            "campaign": r["campaign__name"],
                            "failures": r["n"],
                        }
                        for r in affected.stages
                    ],
                    "sites": [{"site": r["site"], "failures": r["n"]} for r in affected.sites],
                    "nodes": [
                        {"host": r["node__hostname"], "site": r["site"], "failures": r["n"]}
                        for r in affected.nodes
                    ],
                },
                "samples": self.ErrorClassSampleSerializer(samples, many=True).data,
            }
        )
