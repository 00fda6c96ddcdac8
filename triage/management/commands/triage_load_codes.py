"""Load an experiment's own exit codes from YAML.

    python manage.py triage_load_codes codes.yaml --experiment dune

The file:

    family: dune          # optional; default "custom"
    codes:
      - code: 42
        title: Geometry database unreachable
        category: site     # site, software, input-data, resource-limit, configuration, unknown
        transient: true
        action: Retry; if many fail, tell the database experts.
        explanation: The job could not read the detector geometry.

A code already defined for the experiment is updated. These codes win over
every built-in family (see triage/kb/__init__.py).
"""

from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from prodmon.models import Experiment
from triage import services
from triage.kb import Category


class Command(BaseCommand):
    help = "Load an experiment's own exit codes from a YAML file."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--experiment", required=True, help="experiment name")
        parser.add_argument("--dry-run", action="store_true", help="validate only")

    def handle(self, *args, file: Path, experiment: str, dry_run: bool, **options):
        experiment_obj = Experiment.objects.filter(name=experiment).first()
        if experiment_obj is None:
            raise CommandError(f"no experiment named {experiment!r}")
        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        entries, family = self._validate(data)
        if dry_run:
            self.stdout.write(f"{len(entries)} codes are valid (family {family}); nothing saved")
            return
        try:
            created, updated = services.custom_codes_load(
                experiment=experiment_obj, entries=entries, actor=None, family=family
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{experiment}: {created} codes created, {updated} updated (family {family})"
            )
        )

    def _validate(self, data) -> tuple[list[dict], str]:
        if not isinstance(data, dict) or not isinstance(data.get("codes"), list):
            raise CommandError("the file needs a top-level 'codes:' list")
        family = slugify(str(data.get("family") or "custom"))[:32] or "custom"
        entries, seen = [], set()
        for i, item in enumerate(data["codes"], start=1):
            where = f"codes[{i}]"
            if not isinstance(item, dict):
                raise CommandError(f"{where}: expected a mapping")
            try:
                code = int(item["code"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CommandError(f"{where}: 'code' must be an integer") from exc
            if code in seen:
                raise CommandError(f"{where}: code {code} appears twice")
            seen.add(code)
            if not str(item.get("title", "")).strip():
                raise CommandError(f"{where} (code {code}): 'title' is required")
            category = item.get("category", Category.UNKNOWN)
            if category not in Category.VALUES:
                raise CommandError(
                    f"{where} (code {code}): category must be one of {', '.join(Category.VALUES)}"
                )
            if not isinstance(item.get("transient", False), bool):
                raise CommandError(f"{where} (code {code}): 'transient' must be true or false")
            entries.append({**item, "code": code, "category": category})
        return entries, family
