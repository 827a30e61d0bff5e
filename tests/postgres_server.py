"""A throwaway PostgreSQL server for tests, from the machine's own PostgreSQL binaries.

`initdb` into a temporary directory, then `postgres` on 127.0.0.1 with a free port and its
unix socket inside that directory, trusting local connections. As root (CI) the server runs
as the unprivileged `postgres` user, which PostgreSQL insists on; otherwise as the current
user. Durability settings are off: the data is thrown away with the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "gateway"
_NEEDED = ("initdb", "postgres", "pg_isready", "psql")
_START_TIMEOUT_S = 60.0


class PostgresMissing(Exception):
    """What is missing to run a throwaway server here; the message is the skip reason."""


@dataclass(frozen=True)
class Binaries:
    directory: Path

    @property
    def initdb(self) -> str:
        return str(self.directory / "initdb")

    @property
    def postgres(self) -> str:
        return str(self.directory / "postgres")

    @property
    def pg_isready(self) -> str:
        return str(self.directory / "pg_isready")

    @property
    def psql(self) -> str:
        return str(self.directory / "psql")


def find_binaries() -> Binaries:
    """The newest /usr/lib/postgresql/*/bin (Debian's layout), else `initdb` on PATH."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: _version_key(d.parent.name),
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in reversed(candidates):
        if all((directory / name).is_file() for name in _NEEDED):
            return Binaries(directory)
    raise PostgresMissing(
        f"PostgreSQL server binaries ({', '.join(_NEEDED)}) not found under "
        "/usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None for the current user, `postgres` as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissing(
            "running as root and there is no unprivileged 'postgres' user to run the "
            "PostgreSQL server as (PostgreSQL refuses to run as root)"
        ) from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One server in its own temporary directory; `stop` and `start` again keep the data."""

    def __init__(
        self, binaries: Binaries, *, durable: bool = False, root: Path | None = None
    ) -> None:
        """`durable`: fsync on, as in production (benchmarks); tests run without it.
        `root`: a directory kept between runs (a benchmark's filled database), initialised
        only when it holds no data directory yet; else a temporary one."""
        self.binaries = binaries
        self.durable = durable
        self.user = _server_user()
        self.root = root or Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [self.binaries.initdb, "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync"],
            )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser through psql; its unaligned output."""
        result = subprocess.run(
            [self.binaries.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.url(database), "-c", statement],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binaries.postgres, "-D", str(self.data), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.sockets),
                 *(() if self.durable else ("-c", "fsync=off", "-c", "synchronous_commit=off",
                                            "-c", "full_page_writes=off")),
                 "-c", "max_connections=200"],
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._as_server_user(),
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown: open sessions are disconnected, as when a database goes away."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(2)  # SIGINT: fast shutdown
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _ready(self) -> bool:
        probe = subprocess.run(
            [self.binaries.pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", SUPERUSER],
            check=False,
        )
        return probe.returncode == 0

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, **self._as_server_user()
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr.strip()[-2000:]}")

    def _as_server_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [],
                "cwd": str(self.root)}
