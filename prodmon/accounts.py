"""Login with a rate limit on failed attempts, per client address and per
username, so passwords cannot be guessed at speed."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpResponse

WINDOW_S = 15 * 60


def _keys(request) -> list[str]:
    ip = request.META.get("REMOTE_ADDR", "")
    username = (request.POST.get("username") or "").strip().lower()[:150]
    return (
        [f"login-fail:ip:{ip}", f"login-fail:user:{username}"]
        if username
        else [f"login-fail:ip:{ip}"]
    )


def _limits() -> dict[str, int]:
    return {
        "ip": settings.PRODMON_LOGIN_FAILURES_PER_IP,
        "user": settings.PRODMON_LOGIN_FAILURES_PER_USER,
    }


class RateLimitedLoginView(auth_views.LoginView):
    def post(self, request, *args, **kwargs):
        limits = _limits()
        for key in _keys(request):
            kind = key.split(":")[1]
            if (cache.get(key) or 0) >= limits[kind]:
                response = HttpResponse(
                    "Too many failed logins. Wait 15 minutes and try again.",
                    status=429,
                    content_type="text/plain",
                )
                response["Retry-After"] = str(WINDOW_S)
                return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for key in _keys(self.request):
            if cache.add(key, 1, WINDOW_S) is False:
                try:
                    cache.incr(key)
                except ValueError:
                    cache.set(key, 1, WINDOW_S)
        return super().form_invalid(form)
