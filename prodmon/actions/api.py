"""The small JSON endpoint the action page polls for progress."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from prodmon.actions import selectors, services
from prodmon.api import caller_experiment_ids


class BulkActionStatusApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "ui"

    class BulkActionStatusOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        state = serializers.CharField()
        total = serializers.IntegerField()
        done = serializers.IntegerField()
        failed = serializers.IntegerField()
        skipped = serializers.IntegerField()
        processed = serializers.IntegerField()
        is_open = serializers.BooleanField()
        not_before = serializers.DateTimeField()
        seconds_left = serializers.SerializerMethodField()
        started_at = serializers.DateTimeField(allow_null=True)
        finished_at = serializers.DateTimeField(allow_null=True)
        result = serializers.CharField()
        messages = serializers.SerializerMethodField()

        def get_seconds_left(self, action) -> float:
            if action.state != action.State.PENDING:
                return 0.0
            return max(0.0, (action.not_before - timezone.now()).total_seconds())

        def get_messages(self, action) -> list[str]:
            return list(action.messages[-20:])

    @extend_schema(
        responses=BulkActionStatusOutputSerializer, summary="Progress of an action (retry, launch)"
    )
    def get(self, request, pk: int):
        # A read token sees its own experiment; a logged-in user, their experiments.
        visible = caller_experiment_ids(request)
        action = selectors.bulk_action_get(pk=pk, experiment_ids=visible)
        if action is None:
            raise NotFound("no such action in your experiments")
        # A timer lost with a restarted process: start the overdue action again.
        if services.bulk_action_kick(action=action):
            action = selectors.bulk_action_get(pk=pk, experiment_ids=visible)
        return Response(self.BulkActionStatusOutputSerializer(action).data)
