"""Versioned SQL migrations: ``fraudgen/sinks/sql/NNN_name.sql`` applied in order, once each.

Each file runs in its own transaction together with its row in ``schema_migrations`` (version, name,
sha256 of the file), so a failed migration leaves nothing half-applied and a re-run applies only what is
missing. A transaction-level advisory lock serialises concurrent migrators (two pods starting at once).
An applied file whose checksum changed is an error: released migrations are never edited, a new file is
added instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x66726175  # "frau": advisory lock id shared by every fraudgen migrator


class MigrationError(RuntimeError):
    """A migration could not be applied or the database history disagrees with the files."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def available_migrations() -> list[Migration]:
    """The packaged migrations, sorted by version; file names must be ``NNN_name.sql``."""
    found = []
    for entry in resources.files("fraudgen.sinks").joinpath("sql").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} must be named NNN_name.sql")
        found.append(Migration(match.group(1), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply every missing migration on ``conn``; returns the versions applied now (empty if up to date)."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, name text NOT NULL, "
            "checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for migration in available_migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            row = conn.execute(
                "SELECT checksum FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if row is not None:
                if row[0] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was edited after it was applied "
                        "(checksum differs); add a new migration file instead"
                    )
                continue
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
            log.info("migration_applied", version=migration.version, name=migration.name)
    return applied_now
