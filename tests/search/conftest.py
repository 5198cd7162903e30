from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import trainers
from tests.net import free_port

ROBUST_SEARCH = """\
name: robust-test
trainer: robust
config:
  train: {{steps: 100{extra_train}}}
  success: {{metric: val_acc, threshold: 0.9}}
backend: {{kind: local}}
search:
  space:
    train.lr: {{log_uniform: [1.0e-5, 1.0e-1]}}
    train.weight_decay: {{uniform: [0.0, 0.1]}}
    model.kernel: {{categorical: [good, bad]}}
  seeds_per_config: {k}
  seeds_per_round: {per_round}
  n_configs: {n_configs}
  parallel: {parallel}
  sampler: {sampler}
  objective: {objective}
  seed: {seed}
  target: {target}
{more}"""


@pytest.fixture
def robust_trainer(monkeypatch):
    """Register the test trainer whose robust region is known (tests.search.robust_trainer)."""
    monkeypatch.setitem(trainers.REGISTRY, "robust", "tests.search.robust_trainer:TRAINER")


def write_search(directory: Path, *, k: int = 16, per_round: int = 4, n_configs: int = 30, parallel: int = 2,
                 sampler: str = "tpe", objective: str = "success_lcb", seed: int = 1, target: float = 0.8,
                 sleep_s: float = 0.0, more: str = "", name: str = "robust.yaml") -> Path:
    extra_train = f", sleep_s: {sleep_s}" if sleep_s else ""
    path = directory / name
    path.write_text(ROBUST_SEARCH.format(k=k, per_round=per_round, n_configs=n_configs, parallel=parallel,
                                         sampler=sampler, objective=objective, seed=seed, target=target,
                                         extra_train=extra_train, more=textwrap.indent(more, "  ")))
    return path


# ---- a real PostgreSQL server for the session ---------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def url(self, database: str | None = None) -> str:
        return (f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/"
                f"{database or self.database}")


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _install_postgres() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster in a temp dir on 127.0.0.1:<free port>, with a database and a password user.

    Installs Debian's `postgresql` with apt when its binaries are missing; as root, the server runs as the
    `postgres` user (postgres refuses to run as root). Stopped and deleted at the end of the session.
    """
    bindir = _pg_bindir()
    if bindir is None:
        if os.geteuid() != 0:
            pytest.fail("PostgreSQL is not installed and installing it (apt-get install postgresql) needs root")
        _install_postgres()
        bindir = _pg_bindir()
        assert bindir is not None, "apt-get install postgresql did not provide pg_ctl"
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            owner = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="search-pg-"))  # not under pytest's 0700 tmp tree: postgres must reach it
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if as_root:
        os.chmod(base, 0o755)
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", "postgres", "--", *args] if as_root else list(args)
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd=base)

    port = free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off"
    started = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start",
                  check=False)
    if started.returncode != 0:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}")
    server = Postgres("127.0.0.1", port, "search", "s3cr" + secrets.token_hex(8), "searchdb")
    try:
        psql = [str(bindir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        run(*psql, "-c", f"CREATE USER {server.user} WITH CREATEDB PASSWORD '{server.password}'")
        run(*psql, "-c", f"CREATE DATABASE {server.database} OWNER {server.user}")
        yield server
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database(postgres: Postgres, request) -> str:
    """A fresh database (owned by the password user) for one test: its URL, password included."""
    import psycopg2

    name = "t_" + secrets.token_hex(4)
    connection = psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                                  password=postgres.password, dbname=postgres.database)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return postgres.url(name)
