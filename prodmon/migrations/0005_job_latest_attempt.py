"""The job table's latest-attempt columns, kept by triggers (prodmon.latest_attempt),
and the indexes it sorts and filters by."""

import django.db.models.deletion
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.db import migrations, models

from prodmon import latest_attempt


def install_and_backfill(apps, schema_editor):
    latest_attempt.backfill(schema_editor.connection)
    latest_attempt.install(schema_editor.connection)
    if schema_editor.connection.vendor == "postgresql":
        # Check the backfill's deferred foreign keys now: PostgreSQL refuses
        # CREATE INDEX on a table with pending trigger events.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def uninstall(apps, schema_editor):
    latest_attempt.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("prodmon", "0004_bulkaction_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="last_activity_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="last_attempt",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="prodmon.attempt",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="last_site",
            field=models.CharField(blank=True, db_default="", default="", max_length=128),
        ),
        migrations.AddField(
            model_name="job",
            name="last_update",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.comparison.Greatest(
                    "updated_at",
                    django.db.models.functions.comparison.Coalesce(
                        "last_activity_at", "updated_at"
                    ),
                ),
                output_field=models.DateTimeField(),
            ),
        ),
        migrations.RunPython(install_and_backfill, uninstall),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["last_update", "id"], name="job_last_update"),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["state", "last_update"], name="job_state_update"),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["stage", "last_update"], name="job_stage_update"),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                django.db.models.functions.text.Upper("last_site"),
                models.F("last_update"),
                name="job_site_update",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["key", "id"], name="job_key"),
        ),
    ]
