"""A throwaway PostgreSQL cluster: initdb + pg_ctl on a free 127.0.0.1 port, in a temporary
directory removed when it stops (the tests' `postgres` fixture, `bench/run_all.py --shared-store`).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (Debian's
package creates it; `nobody` otherwise). Users isolate themselves by schema
(`PostgresCluster.new_schema()`), not by cluster.

Binaries: $SMSGW_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from smsgw.brokers._base import free_port

HOST = "127.0.0.1"
USER = "smsgw"
DATABASE = "postgres"


def find_bin_dir() -> Path | None:
    explicit = os.environ.get("SMSGW_PG_BIN")
    if explicit:
        return Path(explicit) if (Path(explicit) / "initdb").exists() else None
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> pwd.struct_passwd | None:
    """Whom to run the server as: ourselves, or an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass
class PostgresCluster:
    bin_dir: Path
    root: Path
    port: int = 0
    _user: pwd.struct_passwd | None = None
    _running: bool = False
    _schemas: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    def url(self, schema: str) -> str:
        """A store URL for smsgw.projections.open_store."""
        return f"{self.dsn}?schema={schema}"

    def new_schema(self, tag: str = "t") -> str:
        schema = f"{tag}_{uuid.uuid4().hex[:12]}"
        self._schemas.append(schema)
        return schema

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        user = self._user
        return subprocess.run(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            cwd=self.root,  # the server user may not be allowed into our working directory
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self, attempts: int = 3) -> None:
        self._user = _server_user()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"
        )
        last = ""
        for _ in range(attempts):
            # free_port() can race another process for the port: try a new one if the bind fails.
            self.port = free_port(HOST)
            options = (
                f"-p {self.port} -c listen_addresses={HOST} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                check=False,
            )
            if result.returncode == 0:
                self._running = True
                return
            last = result.stdout + result.stderr
        raise RuntimeError(f"PostgreSQL did not start: {last}\n--- log ---\n{self.log_tail()}")

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def postmaster_pid(self) -> int:
        """The server's pid (pg_ctl starts it detached: not our child), for metering its CPU."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        return "(no log)"


def start_postgres() -> PostgresCluster:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            "no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql-15, "
            "or point SMSGW_PG_BIN at their directory"
        )
    parent = os.environ.get("SMSGW_BROKER_TMP") or None
    cluster = PostgresCluster(bin_dir=bin_dir, root=Path(tempfile.mkdtemp(prefix="smsgw-pg-", dir=parent)))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
