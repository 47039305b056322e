"""gunicorn settings for streaming files with wsgipipe (``gunicorn examples.app:app``).

Every value here can still be overridden on the command line as usual
(``gunicorn -c gunicorn.conf.py --workers 4 examples.app:app``). The reasons
behind each choice are in docs/deployment.md; ``wsgipipe serve`` uses the
same values (wsgipipe.gunicorn.SETTINGS, kept in step by a test).
"""

import os

# Where to listen: loopback unless GUNICORN_BIND (or --bind) says otherwise.
# In production put nginx in front and keep gunicorn on loopback or a socket.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

# gthread with offloading: a file download is handed, after its headers, to
# one sender thread per process (non-blocking sendfile), so a slow reader holds
# no thread; bodies Python must touch (tee, throttle, TLS, HTTP/2) stay on
# gthread's path, where a download occupies a thread. Not sync: there a
# download occupies the whole process, and the arbiter kills it when one
# download outlasts `timeout`. Plain "gthread" still works (docs/deployment.md).
worker_class = "wsgipipe.gunicorn.OffloadWorker"

# Processes: about one per core. Each holds up to worker_connections (1000)
# offloaded downloads, and `threads` requests on gthread's path.
workers = 2

# Concurrent requests per process. An offloaded download frees its thread
# once the headers are out; a download on gthread's path pins one, so size
# this for those (throttled, tee'd, TLS) and for the app's own work.
threads = 8

# Seconds without a heartbeat before the arbiter kills a worker. gthread
# heartbeats from its main loop while threads stream, so long downloads are
# safe; this only catches a worker that is truly stuck.
timeout = 30

# Seconds a worker gets on SIGTERM/HUP to finish the downloads in flight
# before it is killed.
graceful_timeout = 30

# Seconds an idle keep-alive connection is kept open for its next request.
keepalive = 5

# Access log on stderr, and gunicorn's own messages at INFO.
accesslog = "-"
loglevel = "info"

# wsgipipe's transfer lines ("GET /big.bin 200 aborted 65536/67108864 B ...")
# go to stderr next to gunicorn's log. The slow client's idle timeout is
# WSGIPIPE_IDLE_TIMEOUT, and the minimum rate a client must read at is
# WSGIPIPE_MIN_RATE (240 bytes/s after a 5 s grace period, as Kestrel; `1k`,
# `0` for off); both are read by the app (examples/app.py), not by gunicorn.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"wsgipipe": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}


# Prometheus metrics across workers (WSGIPIPE_METRICS=1, docs/operations.md):
# start gunicorn with PROMETHEUS_MULTIPROC_DIR set to an empty directory; when
# a worker dies, its in-flight gauge must stop counting.
def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from wsgipipe.prometheus import mark_process_dead

        mark_process_dead(worker.pid)  # type: ignore[attr-defined]
