from pathlib import Path

from django.http import FileResponse
from django.views.decorators.http import require_GET

REPORTER_PATH = Path(__file__).with_name("prodmon_report.py")


@require_GET
def reporter_download(request):
    """The worker-node reporter, one stdlib-only file, at a stable URL.

    Public on purpose: it holds no secret, and worker nodes fetch it with curl."""
    return FileResponse(
        REPORTER_PATH.open("rb"),
        as_attachment=True,
        filename="prodmon-report.py",
        content_type="text/x-python",
    )
