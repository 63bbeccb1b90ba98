"""gunicorn settings for the camcut backend (all from the environment, see backend/config.py).

``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``: binds 0.0.0.0:$PORT (9090),
$WORKERS processes (1) x $THREADS threads (4). The app is not preloaded: each worker imports
``backend.wsgi`` and loads the CNN once (torch and fork do not mix well).
"""

import os

bind = f"0.0.0.0:{int(os.environ.get('PORT', '9090'))}"
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
