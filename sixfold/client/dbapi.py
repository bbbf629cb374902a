"""A DB-API 2.0 (PEP 249) client for SQLite on sixfold, over gRPC (the `Sql` service).

    import sixfold
    conn = sixfold.connect("127.0.0.1:7101")        # any seed: a storage node, an instance
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO t (name) VALUES (?)", ("ada",))   # opens a transaction
    conn.commit()                                                # answers once durable
    print(conn.execute("SELECT * FROM t").fetchall())
    conn.execute("SELECT count(*) FROM t", read_only=True)      # served by a reader

Finding the cluster (issue 6). `connect(seeds)` takes one address or a comma-separated list
(a storage node, the writer, a reader). On the first statement the connection asks the seeds
for the topology (TopologyService.GetTopology; among the answers naming a writer, the newest
epoch wins) and from then on:

- writes, transactions and unmarked statements go to the current writer;
- statements marked read-only go to a live reader, chosen per statement in turn (round robin
  over the readers the topology lists, shared by the process's connections to the same
  seeds), so a connection's reads spread over every reader. Mark one statement with
  `cursor.execute(sql, params, read_only=True)`, or make it the connection's default with
  `connect(..., read_only=True)` (then `read_only=False` sends one statement to the writer).
  A reader refuses writes (ReadOnlyError). A read-only statement inside an open transaction
  is a ProgrammingError (the transaction's reads must see its own writes, on the writer).
  Readers lag the writer a little: a reader whose snapshot is older than this connection's
  last commit is not used for that statement (it runs on the writer, so a connection reads
  its own writes); with no reader answering, read statements run on the writer.
  `cursor.endpoint` says which address served the statement.
- A single seed that is a reader keeps the connection on that reader, as before: everything
  runs there at its own read point, no transactions, writes raise ReadOnlyError. (Give a
  storage node, the writer or several seeds to have writes routed.) So does a single seed
  that serves no topology.

Failover. When the writer stops answering (connection refused, the connection lost) or
answers that it is not the writer (it stepped down, is handing the role over in a
switchover, or was fenced), the connection asks the topology again, with jittered
exponential backoff, for at most FAILOVER_WAIT_S in all (or the connection's timeout, if
shorter), and goes on with the new writer. The application does not reconnect. What is
retried is only what is safe to retry:

- a standalone read, and a Begin (nothing was written);
- a statement that was never sent (the connection to the writer could not be made) or that
  the old writer refused before running it (not the writer, a reader's read-only refusal).

Otherwise one of two documented errors, both OperationalError subclasses:

- TransactionOutcomeUnknownError: a commit (commit(), or a write run on its own) was sent
  and its answer was lost, or the writer was fenced while committing. It may or may not have
  taken effect, never half: read the data back before retrying.
- TransactionAbortedError: the open transaction died before its commit was sent (its writer
  stopped, stepped down, or rolled it back as idle). Nothing of it was committed: run the
  whole transaction again, from its first statement.

Connection storms are kept down: gRPC channels come from one process-wide pool keyed by
address (CHANNELS_MAX, the least recently used closed beyond it), connections to the same
seeds share one topology and refresh it one at a time, and every retry waits a jittered,
growing delay (BACKOFF_S_FIRST up to BACKOFF_S_MAX).

Transactions behave like Python's sqlite3 module with its default isolation: an INSERT,
UPDATE, DELETE or REPLACE (or executemany), when no transaction is open, opens one (a server
session) and every statement after it runs inside it until commit() or rollback(); other
statements outside a transaction (SELECT, CREATE ...) run on their own, each one committed
(writer) or read at one snapshot (reader) before execute() returns. BEGIN, COMMIT/END and
ROLLBACK sent through execute() open and end the session too. With autocommit=True every
statement runs on its own unless the application sends BEGIN.

Differences from sqlite3 the application should know:

- While a transaction is open, other writes on the writer wait: commit or roll back soon.
  A transaction idle for more than 10 s is rolled back by the server; its next statement
  then raises TransactionAbortedError.
- A statement that fails inside a transaction rolls the whole transaction back (SQLite's
  message is kept; the connection stays usable and the next write opens a new transaction).
- A connection to a reader has no transactions (its Begin is refused): each statement runs
  at its own read point, commit() and rollback() do nothing, writes raise ReadOnlyError.
- A commit whose outcome cannot be known (the write quorum was lost after it was sent, or
  the writer stopped answering) raises TransactionOutcomeUnknownError: it may or may not
  have taken effect. Check (read it back) before retrying.
- Values are SQLite's five types: None, int (64-bit), float, str, bytes. No adapters or
  converters, and only positional `?` parameters (paramstyle "qmark").
- `with conn:` commits on success and rolls back on an exception, like sqlite3; it does not
  close the connection (`contextlib.closing(conn)` does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# The client is split by concept into the modules beside this one (errors, statements,
# routing, stream, connection, cursor); this module re-exports every name it offered before.
# The module globals that tune the client (STREAMING, the timeouts, CHANNELS, ...) are read
# where they are defined: assign or monkeypatch them there (sixfold.client.connection.STREAMING,
# sixfold.client.routing.CHANNELS), not here, where a new value would change nothing.
from sixfold import tls
from sixfold.client.connection import FAILOVER_WAIT_S as FAILOVER_WAIT_S
from sixfold.client.connection import PINNED as PINNED
from sixfold.client.connection import ROLE_PROBE_TIMEOUT_S as ROLE_PROBE_TIMEOUT_S
from sixfold.client.connection import ROLLBACK_TIMEOUT_S as ROLLBACK_TIMEOUT_S
from sixfold.client.connection import ROUTED as ROUTED
from sixfold.client.connection import STREAMING as STREAMING
from sixfold.client.connection import Connection as Connection
from sixfold.client.cursor import Cursor as Cursor
from sixfold.client.errors import FENCED as FENCED
from sixfold.client.errors import LOST as LOST
from sixfold.client.errors import NEVER_SENT as NEVER_SENT
from sixfold.client.errors import REFUSED as REFUSED
from sixfold.client.errors import DatabaseError as DatabaseError
from sixfold.client.errors import DataError as DataError
from sixfold.client.errors import Error as Error
from sixfold.client.errors import IntegrityError as IntegrityError
from sixfold.client.errors import InterfaceError as InterfaceError
from sixfold.client.errors import InternalError as InternalError
from sixfold.client.errors import NoTopologyError as NoTopologyError
from sixfold.client.errors import NotSupportedError as NotSupportedError
from sixfold.client.errors import OperationalError as OperationalError
from sixfold.client.errors import ProgrammingError as ProgrammingError
from sixfold.client.errors import ReadOnlyError as ReadOnlyError
from sixfold.client.errors import TransactionAbortedError as TransactionAbortedError
from sixfold.client.errors import TransactionOutcomeUnknownError as TransactionOutcomeUnknownError
from sixfold.client.errors import Warning as Warning
from sixfold.client.errors import failover_kind as failover_kind
from sixfold.client.errors import retry_safe as retry_safe
from sixfold.client.errors import translate_error as translate_error
from sixfold.client.routing import BACKOFF_S_FIRST as BACKOFF_S_FIRST
from sixfold.client.routing import BACKOFF_S_MAX as BACKOFF_S_MAX
from sixfold.client.routing import CHANNELS as CHANNELS
from sixfold.client.routing import CHANNELS_MAX as CHANNELS_MAX
from sixfold.client.routing import DIRECTORIES_MAX as DIRECTORIES_MAX
from sixfold.client.routing import ENDPOINTS_MAX as ENDPOINTS_MAX
from sixfold.client.routing import READER_SKIP_S as READER_SKIP_S
from sixfold.client.routing import SEEDS_MAX as SEEDS_MAX
from sixfold.client.routing import TOPOLOGY_ANSWERS_MAX as TOPOLOGY_ANSWERS_MAX
from sixfold.client.routing import TOPOLOGY_TIMEOUT_S as TOPOLOGY_TIMEOUT_S
from sixfold.client.routing import TOPOLOGY_TTL_S as TOPOLOGY_TTL_S
from sixfold.client.routing import ChannelPool as ChannelPool
from sixfold.client.routing import Directory as Directory
from sixfold.client.routing import Route as Route
from sixfold.client.routing import backoff_s as backoff_s
from sixfold.client.routing import directory_for as directory_for
from sixfold.client.routing import local_seeds as local_seeds
from sixfold.client.routing import parse_seeds as parse_seeds
from sixfold.client.routing import route_of as route_of
from sixfold.client.statements import DML_KEYWORDS as DML_KEYWORDS
from sixfold.client.statements import READ_KEYWORDS as READ_KEYWORDS
from sixfold.client.statements import first_keyword as first_keyword
from sixfold.client.statements import transaction_control as transaction_control
from sixfold.client.stream import ExecuteStream as ExecuteStream
from sixfold.client.stream import StreamedCallError as StreamedCallError

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not a connection
paramstyle = "qmark"

TIMEOUT_S_DEFAULT = 30.0

__all__ = [
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "ReadOnlyError",
    "TransactionAbortedError",
    "TransactionOutcomeUnknownError",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]


def connect(
    seeds: str | Sequence[str] | None = None,
    *,
    timeout: float = TIMEOUT_S_DEFAULT,
    autocommit: bool = False,
    read_only: bool = False,
    token: str | None = None,
    tls_dir: str | None = None,
) -> Connection:
    """A connection to the cluster that `seeds` ("host:port", or several, comma-separated)
    belong to: storage nodes or instances. A single reader's address is a connection to
    that reader alone. No seeds: the local cluster (`local_seeds`).

    `timeout` is the deadline in seconds of every call (a statement, a commit); a failover
    waits at most FAILOVER_WAIT_S or `timeout`, whichever is shorter. `read_only`: the
    default of `execute(..., read_only=)`, whether a statement goes to a reader. Nothing is
    sent until the first statement, so an unreachable seed shows up there.

    `tls_dir` (default SIXFOLD_TLS_DIR) holds the cluster's CA and the client certificate
    (`sixfold certs init`), `token` (default SIXFOLD_TOKEN) the token of a cluster that asks
    for one (`sixfold auth add`). A local cluster's own are found in its directory. They
    are the process's: every connection it opens after this presents them.
    """
    if tls_dir is not None:
        os.environ[tls.TLS_DIR_VARIABLE] = tls_dir
    if token is not None:
        os.environ[tls.TOKEN_VARIABLE] = token
    if seeds is None:
        seeds = local_seeds()
    return Connection(seeds, timeout=timeout, autocommit=autocommit, read_only=read_only)
