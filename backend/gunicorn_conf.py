"""gunicorn settings for the camcut backend (all from the environment, see backend/config.py).

``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``: binds $CAMCUT_BIND:$PORT (0.0.0.0:9090),
$WORKERS processes (1) x $THREADS threads (4). The app is not preloaded: each worker imports
``backend.wsgi`` and loads the CNN once (torch and fork do not mix well).
"""

import os

from backend.config import bind_address, read_setting

bind = bind_address(read_setting("CAMCUT_BIND"), read_setting("PORT"))
workers = read_setting("WORKERS")
# two threads beyond THREADS for what the /predict limiter answers at once (/health, 503s, /metrics):
# CAMCUT_MAX_INFLIGHT (THREADS-1) + the interactive lane could otherwise occupy every thread
threads = read_setting("THREADS") + 2
worker_class = "gthread"
timeout = read_setting("TIMEOUT")
graceful_timeout = 30
preload_app = False
loglevel = read_setting("LOG_LEVEL").lower()
accesslog = "-"
errorlog = "-"
# no query strings in the access log: they may carry token= parameters
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


# Allocations of at least this many bytes get their own mmap, returned to the system when freed.
# glibc's default threshold (128 KB) rises after each such free, up to 32 MB, so the engine's
# per-request arrays of 1-32 MB (CNN activations, full-image maps) then come from the heap, where
# fragmentation keeps the memory: the featcut worker's peak RSS (VmHWM) went 315 -> 524-578 MB
# over the benchmark's 96 HTTP requests. Fixed thresholds, same requests (runs/probe_http.py,
# loaded machine): 4 MB 546, 2 MB 501, 1 MB 473-479, 512 KB 472 MB; 1 MB costs the worker 8% more
# CPU (35.1 vs 32.6 s over the 96, page faults of the fresh maps). malloc_trim after each request
# instead: 504 MB, and with 2 MB 468 MB at 19% more CPU. MALLOC_MMAP_THRESHOLD_ in the
# environment, if set, wins.
MMAP_THRESHOLD = 1 << 20
# oneDNN (torch's CPU convolutions) caches up to 1,024 compiled primitives with their buffers,
# one set per input shape; the CNN passes at 320 and 480 px meet the shape of each new image.
# Off in the worker (capacity 0), the benchmark's 96 requests replayed in process
# (tools/experiments/speed_memory.py, loaded machine, session 9): peak 475 / 481 MB vs 494 / 486 / 489 with the
# default (capacity 64: 485), the process's CPU 39.5 / 39.1 s vs 40.5 / 40.9 / 39.6 s: recompiling
# costs less than this machine's noise. ONEDNN_PRIMITIVE_CACHE_CAPACITY in the environment wins.
ONEDNN_CACHE_CAPACITY = "0"


def post_fork(server, worker):
    """Set glibc's malloc up in each worker before its threads start.

    Arenas: glibc gives every thread that allocates its own arena (up to 8 per core), and the
    request threads plus the engine's GrabCut threads each keep freed memory in theirs: worker RSS
    crept up by about 20 MB over 1,000 predictions. Two arenas keep it flat (measured in
    process: 360 MB and creeping with the default, 337 MB flat with 2). The mmap threshold:
    MMAP_THRESHOLD above. There is no Python API for either, hence ctypes; M_ARENA_MAX is -8
    and M_MMAP_THRESHOLD -3 in glibc's malloc.h. MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ in
    the environment, if set, win. oneDNN's primitive cache: ONEDNN_CACHE_CAPACITY above, set
    before the worker imports torch (the app is not preloaded).
    """
    import ctypes
    import ctypes.util

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not os.environ.get("MALLOC_ARENA_MAX"):
            libc.mallopt(-8, 2)
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            libc.mallopt(-3, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to set
        pass


# ------------------------------------------------------------------------------------ front
# Slow clients must never hold a worker thread (gthread reads a request in the thread that
# serves it): backend/front.py reads whole requests with time limits on the public addresses
# and forwards them to gunicorn on a private unix socket. See backend/front.py for the why.
_front = None


def on_starting(server):
    global _front
    if not read_setting("CAMCUT_FRONT"):
        return
    import subprocess
    import sys
    import tempfile

    public = list(server.cfg.bind)
    if any(b.startswith(("unix:", "fd://")) for b in public):
        return  # a unix socket or inherited fd: whoever connects there is trusted to buffer
    upstream = os.path.join(tempfile.mkdtemp(prefix="camcut-"), "gunicorn.sock")  # mkdtemp: mode 0700, ours only
    args = [sys.executable, "-m", "backend.front", "--upstream", upstream, "--parent", str(os.getpid())]
    for b in public:
        args += ["--listen", b]
    _front = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ready = _front.stdout.readline().strip() if _front.stdout is not None else b""  # stdout is a PIPE: never None
    if ready != b"ready":
        raise RuntimeError(f"the camcut front could not listen on {public} (exit {_front.wait()})")
    server.cfg.set("bind", [f"unix:{upstream}"])


def on_exit(server):
    if _front is not None and _front.poll() is None:
        _front.terminate()
        _front.wait(10)
    bind = server.cfg.bind[0] if server.cfg.bind else ""
    if _front is not None and bind.startswith("unix:"):
        import shutil

        shutil.rmtree(os.path.dirname(bind[len("unix:") :]), ignore_errors=True)  # our mkdtemp directory
