"""gunicorn settings for the camcut backend (all from the environment, see backend/config.py).

``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``: binds $CAMCUT_BIND:$PORT (0.0.0.0:9090),
$WORKERS processes (1) x $THREADS threads (4). The app is not preloaded: each worker imports
``backend.wsgi`` and loads the CNN once (torch and fork do not mix well).
"""

import os

from backend.config import bind_address, read_setting

bind = bind_address(read_setting("CAMCUT_BIND"), read_setting("PORT"))
workers = int(os.environ.get("WORKERS", "1"))
threads = int(os.environ.get("THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("TIMEOUT", "300"))
graceful_timeout = 30
preload_app = False
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
accesslog = "-"
errorlog = "-"
# no query strings in the access log: they may carry token= parameters
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


def post_fork(server, worker):  # noqa: ANN001 - gunicorn's hook signature
    """Cap glibc's malloc arenas in each worker before its threads start.

    glibc gives every thread that allocates its own arena (up to 8 per core), and the request
    threads plus the engine's GrabCut threads each keep freed memory in theirs: worker RSS
    crept up by about 20 MB over 1,000 predictions. Two arenas keep it flat (measured in
    process: 360 MB and creeping with the default, 337 MB flat with 2). There is no Python API
    for this, hence ctypes; M_ARENA_MAX is -8 in glibc's malloc.h. MALLOC_ARENA_MAX in the
    environment, if set, wins.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 2)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to cap
        pass
