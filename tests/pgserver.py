"""A real PostgreSQL server for the tests, started by the suite itself: ``initdb`` into a
temporary directory, ``pg_ctl start`` on a free loopback port (its unix socket in that directory
too), stopped at the end of the session.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (Debian's
package makes it), else ``nobody``, through ``runuser``. The binaries are looked up on PATH, then
in ``/usr/lib/postgresql/<version>/bin`` (Debian's place; ``.ci/run`` installs them if absent).

Fixtures (tests/backend/conftest.py): ``postgres`` (session: the server) and ``database_url``
("" = SQLite in MODEL_DIR, or with ``@both`` also the URL of a fresh PostgreSQL database per
test); the backend fixtures read it (``settings_factory``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="camcut-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.getuid() == 0:  # initdb and postgres refuse root
            self.user = next(u for u in ("postgres", "nobody") if _user_exists(u))
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "camcut", "--auth=trust", "--locale=C", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "60", "start")
        self._count = itertools.count()

    def _run(self, *cmd: str) -> None:
        if self.user is not None:
            cmd = ("runuser", "-u", self.user, "--", *cmd)
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = self.dir / "log"
            raise RuntimeError(f"{cmd}: {r.stdout}{r.stderr}{log.read_text()[-2000:] if log.exists() else ''}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://camcut@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"t{next(self._count)}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# The store's engines: ``@both`` on a test (or as a module's ``pytestmark``) runs it on each,
# through the ``database_url`` fixture of tests/backend/conftest.py.
ENGINES = ["sqlite", "postgresql"]
both = pytest.mark.parametrize("database_url", ENGINES, indirect=True)
