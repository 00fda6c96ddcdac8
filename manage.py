#!/usr/bin/env python
"""Django's command-line utility for prodmon."""

import os
import sys


def main() -> None:
    # The embedded default needs no services; production sets
    # DJANGO_SETTINGS_MODULE=prodmon.settings.production explicitly.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prodmon.settings.embedded")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
