"""The job table. Rows are jobs from selectors.job_table_list, whose `last_*`
annotations describe each job's latest attempt."""

import django_tables2 as tables
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from prodmon.models import Job
from prodmon.templatetags.prodmon_format import badge, exit_status, timestamp


class CappedCountPaginator(Paginator):
    """Counts at most `cap` rows: an exact count(*) over millions of jobs costs
    more than the page itself. Past the cap the count reads "10,000+"
    (`count_capped`) and the pages stop there; filters narrow the list."""

    cap = 10_000

    count_capped = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        qs = getattr(getattr(rows, "data", None), "data", None)  # BoundRows -> QuerySet
        if isinstance(qs, QuerySet):
            # Any cap+1 matching rows will do: no ORDER BY, and only the key
            # selected, so PostgreSQL drops the annotations' outer joins.
            n = qs.order_by().values("pk")[: self.cap + 1].count()
        else:
            n = len(rows)
        self.count_capped = n > self.cap
        return min(n, self.cap)


def _stage_jobs_url(record: Job) -> str:
    return f"{reverse('job-list')}?stage={record.stage_id}"


class JobTable(tables.Table):
    key = tables.Column(
        verbose_name="Job", linkify=True, attrs={"td": {"class": "key"}}, order_by=("key", "pk")
    )
    campaign = tables.Column(
        accessor="stage__campaign__name",
        verbose_name="Campaign",
        order_by=("stage__campaign__experiment__name", "stage__campaign__name", "pk"),
        linkify=lambda record: record.stage.campaign.get_absolute_url(),
    )
    stage = tables.Column(
        accessor="stage__name",
        verbose_name="Stage",
        order_by=("stage__campaign__name", "stage__order", "stage__name", "pk"),
        linkify=_stage_jobs_url,
    )
    state = tables.Column(order_by=("state", "pk"))
    attempt_count = tables.Column(
        verbose_name="Attempts", attrs={"td": {"class": "num"}, "th": {"class": "num"}}
    )
    last_exit = tables.Column(
        accessor="last_exit_code",
        verbose_name="Last exit",
        order_by=("last_exit_code", "last_signal", "pk"),
        # A job killed by a signal has no exit code; render it anyway.
        empty_values=(),
    )
    last_site = tables.Column(verbose_name="Site", order_by=("last_site", "pk"), default="—")
    last_hostname = tables.Column(
        verbose_name="Node", order_by=("last_hostname", "pk"), default="—"
    )
    last_update = tables.Column(verbose_name="Last update", order_by=("last_update", "pk"))

    class Meta:
        model = Job
        fields: tuple[str, ...] = ()
        sequence = (
            "key",
            "campaign",
            "stage",
            "state",
            "attempt_count",
            "last_exit",
            "last_site",
            "last_hostname",
            "last_update",
        )
        order_by = ("-last_update",)
        template_name = "prodmon/_table.html"
        attrs = {"class": "grid jobs"}
        empty_text = "No jobs match these filters."

    def render_campaign(self, record: Job, value: str):
        return format_html(
            '<span class="muted">{}/</span>{}', record.stage.campaign.experiment.name, value
        )

    def render_state(self, record: Job):
        # `value` would be the choice label; the badge wants the raw state.
        if record.duplicate_completions:
            return format_html(
                '{} <span class="flag" title="completed {} times; only the first good '
                'attempt counts">duplicate</span>',
                badge(record.state),
                record.duplicate_completions + 1,
            )
        return badge(record.state)

    def render_last_exit(self, record: Job):
        # Links straight to the latest attempt, where its log tail is.
        status = exit_status(record.last_exit_code, record.last_signal)
        if record.last_attempt_uid is None:
            return status
        return format_html(
            '<a href="{}" title="latest attempt">{}</a>',
            reverse("attempt-detail", args=[record.last_attempt_uid]),
            status,
        )

    def render_last_hostname(self, value: str):
        return format_html('<span class="mono">{}</span>', value)

    def render_last_update(self, value):
        return timestamp(value)
