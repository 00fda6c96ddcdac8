"""Portal pages. (Filled in by the portal work.)"""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse


@login_required
def campaign_list(request):
    return HttpResponse("campaigns")


@login_required
def campaign_detail(request, pk):
    return HttpResponse("campaign")


@login_required
def job_list(request):
    return HttpResponse("jobs")


@login_required
def job_detail(request, pk):
    return HttpResponse("job")


@login_required
def attempt_detail(request, uid):
    return HttpResponse("attempt")
