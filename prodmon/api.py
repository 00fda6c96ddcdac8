"""Read API: campaigns, jobs and attempts of the caller's experiments.

A token sees only its own experiment (and needs the `read` scope); a logged-in
user sees the experiments they are a member of."""

from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, PermissionDenied

from logserver.models import IngestToken
from prodmon import selectors
from prodmon.models import Attempt, Campaign, Job


def caller_experiment_ids(request) -> set[int]:
    if isinstance(request.auth, IngestToken):
        if not request.auth.has_scope("read"):
            raise PermissionDenied("this token lacks the 'read' scope")
        return {request.auth.experiment_id}
    return selectors.experiment_ids_for_user(user=request.user)


class CampaignListApi(generics.ListAPIView):
    class CampaignOutputSerializer(serializers.ModelSerializer):
        experiment = serializers.CharField(source="experiment.name")

        class Meta:
            model = Campaign
            fields = ["id", "experiment", "name", "title", "state", "created_at"]

    serializer_class = CampaignOutputSerializer

    def get_queryset(self):
        return selectors.campaign_list(experiment_ids=caller_experiment_ids(self.request))


class JobListApi(generics.ListAPIView):
    class JobOutputSerializer(serializers.ModelSerializer):
        campaign = serializers.CharField(source="stage.campaign.name")
        stage = serializers.CharField(source="stage.name")

        class Meta:
            model = Job
            fields = [
                "id",
                "campaign",
                "stage",
                "key",
                "state",
                "attempt_count",
                "duplicate_completions",
                "max_attempts",
            ]

    serializer_class = JobOutputSerializer

    def get_queryset(self):
        qs = selectors.job_list(experiment_ids=caller_experiment_ids(self.request))
        params = self.request.query_params
        if params.get("campaign"):
            qs = qs.filter(stage__campaign__name=params["campaign"])
        if params.get("stage"):
            qs = qs.filter(stage__name=params["stage"])
        if params.get("state"):
            qs = qs.filter(state=params["state"])
        return qs.order_by("pk")


class AttemptDetailApi(generics.RetrieveAPIView):
    class AttemptOutputSerializer(serializers.ModelSerializer):
        job = serializers.CharField(source="job.key")
        stage = serializers.CharField(source="job.stage.name")
        campaign = serializers.CharField(source="job.stage.campaign.name")
        host = serializers.CharField(source="node.hostname", default=None)
        site = serializers.CharField(source="node.site", default=None)

        class Meta:
            model = Attempt
            fields = [
                "uid",
                "campaign",
                "stage",
                "job",
                "number",
                "status",
                "host",
                "site",
                "started_at",
                "ended_at",
                "last_heartbeat_at",
                "exit_code",
                "signal",
                "wall_s",
                "cpu_s",
                "cpu_efficiency",
                "peak_rss_bytes",
                "disk_bytes",
                "events_processed",
                "output_bytes",
                "log_bytes",
                "is_duplicate_completion",
            ]

    serializer_class = AttemptOutputSerializer

    def get_object(self):
        attempt = selectors.attempt_get(
            uid=self.kwargs["uid"], experiment_ids=caller_experiment_ids(self.request)
        )
        if attempt is None:
            raise NotFound("no such attempt in your experiments")
        return attempt
