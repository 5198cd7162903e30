"""Where the study lives: SQLite in the run directory by default, any SQLAlchemy URL (PostgreSQL) for clusters.

Why SQLite and not Optuna's JournalStorage with a file backend, for the embedded default:

- Heartbeats. A configuration whose worker is killed must not stay RUNNING forever: it has to be failed after a
  grace period and queued again (`RetryHeartbeatStaleTrialCallback`). In Optuna 5.0 only `RDBStorage` implements
  heartbeats (`BaseHeartbeat`); `JournalStorage` does not, so with a journal file a killed evaluation would stay
  RUNNING and hold one of the study's `n_configs` slots for good.
- One code path. The default and the cluster setup (PostgreSQL) are then the same `RDBStorage`: heartbeats,
  stale-trial failing, retries and `optuna-dashboard sqlite:///...` behave identically, and what the tests check
  on SQLite holds on PostgreSQL.
- Safe for the workers of one machine. The database is switched to WAL journaling (readers never block the
  writer) and every connection waits up to BUSY_TIMEOUT_S for a lock instead of failing with "database is
  locked". A search writes little (a few rows per configuration per round of seeds, plus one heartbeat per
  configuration per `heartbeat_interval`), far below what one SQLite file serialises.
- Not for several machines: WAL needs shared memory, so a study shared over NFS must use a server database
  (`search.storage: postgresql://...`), which is what a cluster has anyway.

Passwords in URLs are never printed, logged or written: every message goes through `mask_url` / `mask_text`,
and `search.storage: env:VAR` reads the URL from an environment variable so it need not be on a command line.
"""

from __future__ import annotations

import random
import sqlite3
import time
import warnings
from pathlib import Path
from urllib.parse import quote, quote_plus

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_FILE = "study.db"
BUSY_TIMEOUT_S = 60
OPEN_ATTEMPTS = 4  # several workers starting on a fresh database race to create Optuna's tables; losers retry
MASK = "***"


class StorageError(RuntimeError):
    """The storage could not be opened; the message has the URL's password masked."""


def default_url(search_dir: Path) -> str:
    return f"sqlite:///{(search_dir / DEFAULT_FILE).resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<storage URL that does not parse>"


def password_of(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


def mask_text(text: str, url: str | None) -> str:
    """`text` with the URL's password (raw or URL-quoted) replaced by ***."""
    secret = password_of(url) if url else None
    if not secret:
        return text
    for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
        text = text.replace(form, MASK)
    return text


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int | None, max_retry: int) -> RDBStorage:
    """An RDBStorage with heartbeats; a killed configuration is failed after the grace period and queued again."""
    engine_kwargs: dict = {"pool_pre_ping": True}
    if is_sqlite(url):
        _prepare_sqlite(url)
        engine_kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period, heartbeat_stale_trial_callback=(
                                      RetryHeartbeatStaleTrialCallback(max_retry=max_retry)))
        except ImportError as error:  # the database driver is not installed: retrying will not help
            raise StorageError(mask_text(f"cannot open storage {mask_url(url)}: {error}", url)) from None
        except Exception as error:  # server down, bad credentials; or workers racing to create the tables
            if attempt == OPEN_ATTEMPTS:
                detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise StorageError(mask_text(f"cannot open storage {mask_url(url)}: {detail}", url)) from None
            time.sleep(random.uniform(0.2, 0.5) * attempt)  # the next attempt finds the tables the winner made
    raise AssertionError("unreachable")  # pragma: no cover


def dashboard_command(url: str, study_name: str) -> str:
    """How to look at the study in optuna-dashboard (password masked: substitute it, or export it first)."""
    masked = mask_url(url)
    note = f"  # replace {MASK} with the password" if password_of(url) else ""
    return f"pip install optuna-dashboard && optuna-dashboard '{masked}'{note}  (study: {study_name})"


def _prepare_sqlite(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_S) as connection:  # persistent: set once, kept in the file
        connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
