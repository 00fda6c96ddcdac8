"""The job table's filters. Every choice list is scoped to the user's experiments.

Site, node and exit code describe the job's *latest* attempt (highest number),
the same attempt the table's columns show, so a filter and its column agree.
"""

import django_filters
from django import forms

from prodmon import selectors
from prodmon.models import Job
from triage import selectors as triage_selectors


class JobFilter(django_filters.FilterSet):
    key = django_filters.CharFilter(lookup_expr="icontains", label="Job key contains")
    experiment = django_filters.ModelChoiceFilter(
        field_name="stage__campaign__experiment",
        queryset=None,  # set per user in __init__
        label="Experiment",
        empty_label="any experiment",
    )
    campaign = django_filters.ModelChoiceFilter(
        field_name="stage__campaign", queryset=None, label="Campaign", empty_label="any campaign"
    )
    stage = django_filters.ModelChoiceFilter(queryset=None, label="Stage", empty_label="any stage")
    state = django_filters.ChoiceFilter(
        choices=Job.State.choices, label="Job state", empty_label="any state"
    )
    site = django_filters.CharFilter(
        field_name="last_site",
        lookup_expr="iexact",
        label="Site (latest attempt)",
        widget=forms.TextInput(attrs={"placeholder": "e.g. FNAL"}),
    )
    node = django_filters.CharFilter(
        field_name="last_hostname",
        lookup_expr="icontains",
        label="Node (latest attempt)",
        widget=forms.TextInput(attrs={"placeholder": "hostname contains"}),
    )
    exit_code = django_filters.NumberFilter(
        field_name="last_exit_code",
        label="Exit code (latest attempt)",
        widget=forms.NumberInput(attrs={"step": 1, "placeholder": "e.g. 65"}),
    )

    error_class = django_filters.NumberFilter(
        method="filter_error_class",
        label="Error class (latest failure)",
        widget=forms.NumberInput(attrs={"step": 1, "placeholder": "class id"}),
    )

    attention = django_filters.ChoiceFilter(
        method="filter_attention",
        choices=triage_selectors.ATTENTION_CHOICES,
        label="Needs attention",
        empty_label="anything",
    )

    class Meta:
        model = Job
        fields: list[str] = []

    def __init__(self, data=None, queryset=None, *, experiment_ids: set[int], **kwargs):
        super().__init__(data, queryset, **kwargs)
        self._experiment_ids = experiment_ids
        self.filters["experiment"].queryset = selectors.experiment_list_by_ids(
            experiment_ids=experiment_ids
        )
        self.filters["campaign"].queryset = selectors.campaign_list(
            experiment_ids=experiment_ids
        ).order_by("experiment__name", "name")
        self.filters["stage"].queryset = selectors.stage_list(experiment_ids=experiment_ids)

    def filter_error_class(self, queryset, name, value):
        # The triage app knows which jobs' latest failure is in a class.
        job_ids = triage_selectors.error_class_job_ids(str(int(value)), self._experiment_ids)
        return queryset.filter(pk__in=job_ids)

    def filter_attention(self, queryset, name, value):
        # Lost, hung, duplicate completions and partial failures: triage knows.
        return queryset.filter(
            pk__in=triage_selectors.attention_job_ids(value, self._experiment_ids)
        )
