"""sixfold: a quorum storage engine on the design of Amazon Aurora."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sixfold.client.dbapi import Connection

__version__ = "0.1.0"


def connect(
    seeds: str | list[str] | None = None,
    *,
    timeout: float = 30.0,
    autocommit: bool = False,
    read_only: bool = False,
    token: str | None = None,
    tls_dir: str | None = None,
) -> Connection:
    """A DB-API 2.0 connection to SQLite on sixfold: see `sixfold.client.dbapi.connect`.

    No seeds: the local cluster ($SIXFOLD_DIR or ./.sixfold, else the default ports).
    Imported on first use so that `import sixfold` stays light (no gRPC).
    """
    from sixfold.client.dbapi import connect as dbapi_connect

    return dbapi_connect(
        seeds,
        timeout=timeout,
        autocommit=autocommit,
        read_only=read_only,
        token=token,
        tls_dir=tls_dir,
    )
