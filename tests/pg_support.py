"""A real PostgreSQL server for the tests and benchmarks: Debian's binaries, a throw-away cluster.

``PgServer.start()`` runs ``initdb`` into a new temporary folder and ``pg_ctl start`` on a free
127.0.0.1 port (its Unix socket in the same folder); ``stop()`` stops it and deletes the folder.
PostgreSQL refuses to run as root: when we are root, the server runs as a system user
(``nlpg``, created with ``useradd --system`` if missing) through ``runuser``. The cluster trusts
local connections (it listens on 127.0.0.1 only and lives for one test session), and its
superuser is ``postgres``.

``database()`` makes a fresh database for one test (``CREATE DATABASE … TEMPLATE``: a file copy,
far faster than creating the tables again) and ``drop()`` removes it.
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

PG_USER = "nlpg"  # the system user the server runs as when we are root
SUPERUSER = "postgres"
PASSWORD_ROLE = "nl_password_user"  # the one role that must log in with a password


class PgUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing or the server would not start (the message says
    which, and how to install them)."""


def bindir() -> Path:
    """Where Debian's server binaries are: ``pg_config --bindir``, else the newest
    /usr/lib/postgresql/N/bin that holds an initdb."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        raise PgUnavailable("PostgreSQL server binaries not found (no initdb in `pg_config "
                            "--bindir` or /usr/lib/postgresql/*/bin): apt-get install postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", PG_USER], capture_output=True, text=True)
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise PgUnavailable(f"cannot create the system user {PG_USER!r} to run PostgreSQL as: "
                            f"{result.stderr.strip()}")
    return pwd.getpwnam(PG_USER)


class PgServer:
    """One throw-away PostgreSQL cluster (see the module docstring)."""

    def __init__(self, root: Path, port: int, bin_path: Path, as_user: str | None):
        self.root = root
        self.data = root / "data"
        self.socket_dir = root
        self.port = port
        self.bin = bin_path
        self.as_user = as_user
        self._names = itertools.count(1)
        self.template: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def start(cls, *, durable: bool = False) -> "PgServer":
        """initdb + pg_ctl start. ``durable=False`` (tests) turns fsync off: a crash of the
        machine loses the cluster, which is thrown away anyway."""
        bin_path = bindir()
        as_user = None
        root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        if os.geteuid() == 0:
            user = _ensure_user()
            as_user = PG_USER
            os.chown(root, user.pw_uid, user.pw_gid)
        os.chmod(root, 0o700)
        server = cls(root, _free_port(), bin_path, as_user)
        try:
            server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth=trust",
                        "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
            settings = {
                "listen_addresses": "'127.0.0.1'", "port": str(server.port),
                "unix_socket_directories": f"'{server.socket_dir}'",
                "max_connections": "200", "shared_buffers": "128MB",
                "logging_collector": "off",
            }
            if not durable:
                settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
            with open(server.data / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
                conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
            # one role must give a password, so that libpq's PGPASSWORD / ~/.pgpass can be tested
            hba = server.data / "pg_hba.conf"
            hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
                           + hba.read_text(encoding="utf-8"), encoding="utf-8")
            server._run("pg_ctl", "start", "-D", str(server.data), "-w", "-t", "60",
                        "-l", str(server.root / "server.log"))
        except BaseException:
            server._cleanup()
            raise
        return server

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        finally:
            self._cleanup()

    def crash(self) -> None:
        """Stop the server the hard way (``pg_ctl stop -m immediate``: every connection cut, no
        checkpoint, as if the machine lost power); ``restart()`` brings it back (crash recovery)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")

    def restart(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.root / "server.log"))

    def _cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                cwd=self.root, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PgUnavailable(f"{tool} failed ({result.returncode}): "
                                f"{(result.stderr or result.stdout).strip()[-2000:]} {tail}")

    # -- databases -------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def admin(self):
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def database(self, *, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template or "template0"}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, *args: str, dbname: str = "postgres") -> str:
        """Run the psql client (as this process's user; it only connects over TCP)."""
        psql = shutil.which("psql") or str(self.bin / "psql")
        result = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname),
                                 *args], capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

