"""A throwaway PostgreSQL server on 127.0.0.1 for the DBOS peer of bench/cluster.py.

Debian's ``postgresql`` package is installed if missing (as root, ``apt-get``); the server
runs from its binaries on a fresh data folder and a free port, as the ``postgres`` user
when this runs as root (PostgreSQL refuses to run as root), and is stopped on exit. It runs
with ``fsync=off``, as the bench's etcd runs with ``--unsafe-no-fsync``: neither side pays
for the disk.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench._ports import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
        # The package may start its own cluster on 5432: stop it, this bench starts its own.
        for cluster in glob.glob("/etc/postgresql/*/main"):
            version = Path(cluster).parent.name
            subprocess.run(["pg_ctlcluster", version, "main", "stop"], check=False)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


class Postgres:
    """``with Postgres() as pg:`` a server on ``pg.port`` with its data in a fresh folder
    of its own (removed on exit); ``pg.create(database)``."""

    def __init__(self) -> None:
        # Its own folder under /tmp: the postgres user must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="dawait-bench-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> str:
        """Create ``database`` (empty) and return its URL."""
        command = [str(_bin_dir() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
        subprocess.run([*command, "-U", "postgres", database], check=True, capture_output=True)
        return self.url(database)

    def __enter__(self) -> Postgres:
        bin = _bin_dir()
        data = self.folder / "pgdata"
        data.mkdir()
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(data, "postgres")
            as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        init = subprocess.run(
            [str(bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
            capture_output=True,
            text=True,
            check=False,
            **as_user,
        )
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "fsync": "off",
            "max_connections": "300",
        }
        flags = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        log = (self.folder / "postgres.log").open("wb")
        self.process = subprocess.Popen(
            [str(bin / "postgres"), "-D", str(data), *flags], stdout=log, stderr=log, **as_user
        )
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        ).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"postgres did not start: see {self.folder / 'postgres.log'}")
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
