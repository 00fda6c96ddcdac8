"""gunicorn configuration for prodmon, used by `make run` and in production.

Every value can be overridden from the environment (see README, Configuration).
"""

import multiprocessing
import os

bind = os.environ.get("PRODMON_BIND", "127.0.0.1:8000")
# Sync workers with threads: the ingest path is short and database-bound.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("PRODMON_WEB_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("PRODMON_WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 30
# Recycle workers now and then so a slow leak never becomes an outage.
max_requests = int(os.environ.get("PRODMON_WEB_MAX_REQUESTS", "20000"))
max_requests_jitter = 2000
# "off" disables the access log (nginx keeps one in front anyway).
accesslog = (
    None
    if os.environ.get("PRODMON_ACCESS_LOG", "-") == "off"
    else os.environ.get("PRODMON_ACCESS_LOG", "-")
)
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "prodmon-web"

# Prometheus metrics from every worker process are summed at /metrics.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(os.environ.get("PRODMON_VAR_DIR", "var"), "metrics")
)
# Made when the config is read: the app may be imported before on_starting.
os.makedirs(_metrics_dir, exist_ok=True)


def on_starting(server):
    # Samples of a previous run's dead workers would be summed in: start clean.
    for name in os.listdir(_metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
