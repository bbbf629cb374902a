"""The DB-API client, `sixfold sql` and `sixfold shell`: pure parts, then real processes."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import sixfold
from sixfold.client import dbapi
from sixfold.core import errors
from sixfold.tools import shell
from tests.conftest import LocalCluster

READER_LAG_LIMIT_S = 15.0  # readers learn the VDL from the nodes: a little behind the writer

# -- pure -----------------------------------------------------------------------------------


def test_module_globals_and_exception_hierarchy() -> None:
    assert (dbapi.apilevel, dbapi.threadsafety, dbapi.paramstyle) == ("2.0", 1, "qmark")
    assert issubclass(dbapi.Warning, Exception) and issubclass(dbapi.Error, Exception)
    for name in ("InterfaceError", "DatabaseError"):
        assert issubclass(getattr(dbapi, name), dbapi.Error)
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        assert issubclass(getattr(dbapi, name), dbapi.DatabaseError)
        assert getattr(dbapi.Connection, name) is getattr(dbapi, name)
    assert issubclass(dbapi.ReadOnlyError, dbapi.OperationalError)
    assert issubclass(dbapi.TransactionOutcomeUnknownError, dbapi.OperationalError)
    assert issubclass(dbapi.TransactionAbortedError, dbapi.OperationalError)


def test_import_sixfold_stays_light() -> None:
    code = "import sys, sixfold; assert 'grpc' not in sys.modules; assert callable(sixfold.connect)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize(
    ("sql", "keyword"),
    [
        ("insert into t values (1)", "INSERT"),
        ("  -- a comment\n /* another\n one */ UPDATE t SET a = 1", "UPDATE"),
        ("\nreplace into t values (1)", "REPLACE"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "WITH"),
        ("", ""),
        ("-- only a comment", ""),
    ],
)
def test_first_keyword(sql: str, keyword: str) -> None:
    assert dbapi.first_keyword(sql) == keyword


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("BEGIN", "BEGIN"),
        ("begin immediate transaction;", "BEGIN"),
        (" COMMIT ", "COMMIT"),
        ("end transaction", "COMMIT"),
        ("ROLLBACK;", "ROLLBACK"),
        ("ROLLBACK TO sp1", None),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", None),
        ("SELECT 'BEGIN'", None),
    ],
)
def test_transaction_control(sql: str, verb: str | None) -> None:
    assert dbapi.transaction_control(sql) == verb


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        ("UNIQUE constraint failed: t.id", dbapi.IntegrityError),
        ("NOT NULL constraint failed: t.a", dbapi.IntegrityError),
        ("datatype mismatch", dbapi.IntegrityError),
        ('near "SELEC": syntax error', dbapi.ProgrammingError),
        ("wrong parameters: Incorrect number of bindings supplied", dbapi.ProgrammingError),
        ("no such table: nope", dbapi.OperationalError),
        ("no such column: zz", dbapi.OperationalError),
        ("string or blob too big", dbapi.DataError),
    ],
)
def test_sql_errors_map_like_sqlite3_and_keep_the_message(message: str, cls: type) -> None:
    exc = dbapi.translate_error(errors.SqlError(message), commit=True, endpoint="w")
    assert type(exc) is cls and str(exc) == message
    assert isinstance(exc.sixfold_error, errors.SqlError)


def test_commit_outcome_errors() -> None:
    unknown = errors.QuorumUnavailableError("write", 3, 4)
    Exception.__init__(unknown, "write quorum unavailable: ...; its outcome is unknown: ...")
    unknown.outcome_unknown = True  # the field decides (issue 13), not the text
    exc = dbapi.translate_error(unknown, commit=True, endpoint="w")
    assert type(exc) is dbapi.TransactionOutcomeUnknownError
    assert str(exc).startswith("write quorum unavailable") and "read the data back" in str(exc)
    said_only = errors.QuorumUnavailableError("write", 3, 4)
    Exception.__init__(said_only, "write quorum unavailable: ...; its outcome is unknown: ...")
    assert type(dbapi.translate_error(said_only, commit=True, endpoint="w")) is (
        dbapi.OperationalError
    )
    refused = dbapi.translate_error(
        errors.QuorumUnavailableError("write", 3, 4), commit=True, endpoint="w"
    )
    assert type(refused) is dbapi.OperationalError  # never sent: certainly not committed
    timeout = dbapi.translate_error(errors.CommitTimeoutError("slow"), commit=True, endpoint="w")
    assert type(timeout) is dbapi.TransactionOutcomeUnknownError
    read = dbapi.translate_error(errors.CommitTimeoutError("slow"), commit=False, endpoint="w")
    assert type(read) is dbapi.OperationalError
    ro = dbapi.translate_error(errors.ReadOnlyError("read-only: x"), commit=True, endpoint="r1")
    assert type(ro) is dbapi.ReadOnlyError and str(ro) == "read-only: x"
    gone = dbapi.translate_error(errors.SessionError("no session abc"), commit=False, endpoint="w")
    assert type(gone) is dbapi.TransactionAbortedError and "rolled back" in str(gone)
    assert type(
        dbapi.translate_error(errors.RecoveryError("not ready"), commit=True, endpoint="w")
    ) is (dbapi.OperationalError)


def test_unreachable_endpoint_is_an_operational_error() -> None:
    conn = sixfold.connect("127.0.0.1:1", timeout=2.0)
    with pytest.raises(dbapi.OperationalError, match="UNAVAILABLE") as info:
        conn.execute("INSERT INTO t VALUES (1)")  # never sent: not "outcome unknown"
    assert type(info.value) is dbapi.OperationalError
    conn.close()
    with pytest.raises(dbapi.ProgrammingError, match="closed database"):
        conn.cursor()


def test_bad_parameters_are_refused_before_sending() -> None:
    conn = sixfold.connect("127.0.0.1:1", timeout=2.0)
    try:
        with pytest.raises(dbapi.DataError, match="does not fit"):
            conn.execute("SELECT ?", (1 << 64,))
        with pytest.raises(dbapi.ProgrammingError, match="type 'list' is not supported"):
            conn.execute("SELECT ?", ([1],))
        with pytest.raises(dbapi.ProgrammingError, match="named parameters"):
            conn.execute("SELECT :a", {"a": 1})
    finally:
        conn.close()


def test_split_statements_uses_sqlite_tokens() -> None:
    text = "SELECT ';'; CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;\n;; SELECT 2"
    statements, rest = shell.split_statements(text)
    assert statements == [
        "SELECT ';';",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
    ]
    assert rest.strip() == "SELECT 2"
    assert shell.split_statements("-- just a comment\n") == ([], "-- just a comment\n")


def test_format_table() -> None:
    lines = shell.format_table(["id", "name", "data"], [(1, "ada", b"\x00\xff"), (10, None, None)])
    assert lines == [
        "id  name  data",
        "--  ----  -------",
        " 1  ada   x'00ff'",
        "10  NULL  NULL",
        "(2 rows)",
    ]
    assert shell.format_value(b"\x01" * 100).endswith("(100 bytes)")
    assert shell.json_value(b"\x01") == {"blob_hex": "01"}


# -- real processes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sql_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("dbapi") / "cluster")
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture
def conn(sql_cluster: LocalCluster) -> Iterator[dbapi.Connection]:
    connection = sixfold.connect(sql_cluster.layout.find_writer_address(), timeout=30.0)
    with contextlib.closing(connection):
        yield connection


def reader_conn(c: LocalCluster, name: str = "r1") -> dbapi.Connection:
    return sixfold.connect(c.layout.reader_address(name), timeout=10.0)


def wait_for_rows(connection: dbapi.Connection, sql: str, expected: list) -> None:
    """Poll a reader until `sql` gives `expected`: a bounded wait, since readers lag."""
    deadline = time.monotonic() + READER_LAG_LIMIT_S
    while True:
        try:
            got = connection.execute(sql).fetchall()
        except dbapi.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            got = None
        if got == expected:
            return
        assert time.monotonic() < deadline, f"reader still gives {got!r}, want {expected!r}"
        time.sleep(0.1)


@pytest.mark.processes
def test_round_trip_of_every_value_type(conn: dbapi.Connection) -> None:
    conn.execute("CREATE TABLE types (i INTEGER, r REAL, s TEXT, b BLOB, n)")
    assert not conn.in_transaction  # DDL outside a transaction runs on its own
    values = [
        (2**63 - 1, 1.5, "héllo wörld ✓", b"\x00\xff\x00", None),
        (-(2**63), -0.0, "", b"", None),
        (True, float("inf"), "a;b'c", bytearray(b"ba"), None),
    ]
    for row in values:
        conn.execute("INSERT INTO types VALUES (?, ?, ?, ?, ?)", row)
    assert conn.in_transaction  # the INSERT opened one, as sqlite3 does
    conn.commit()
    assert not conn.in_transaction and conn.last_commit_lsn > 0
    rows = conn.execute("SELECT i, r, s, b, n, typeof(b) FROM types ORDER BY rowid").fetchall()
    assert rows == [
        (2**63 - 1, 1.5, "héllo wörld ✓", b"\x00\xff\x00", None, "blob"),
        (-(2**63), -0.0, "", b"", None, "blob"),
        (1, float("inf"), "a;b'c", b"ba", None, "blob"),
    ]
    assert [type(v) for v in rows[0][:5]] == [int, float, str, bytes, type(None)]
    assert conn.execute("SELECT ?, ?", (None, 3)).fetchone() == (None, 3)


@pytest.mark.processes
def test_commit_and_rollback(sql_cluster: LocalCluster, conn: dbapi.Connection) -> None:
    conn.execute("CREATE TABLE tx (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO tx VALUES (1, 'rolled back')")
    assert conn.execute("SELECT v FROM tx").fetchall() == [("rolled back",)]  # own write
    conn.rollback()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM tx").fetchone() == (0,)

    with conn:  # commits on success, like sqlite3
        conn.execute("INSERT INTO tx VALUES (2, 'kept')")
    with pytest.raises(ZeroDivisionError), conn:  # rolls back on an exception
        conn.execute("INSERT INTO tx VALUES (3, 'dropped')")
        raise ZeroDivisionError
    other = sixfold.connect(sql_cluster.layout.find_writer_address())
    with contextlib.closing(other):
        assert other.execute("SELECT id, v FROM tx").fetchall() == [(2, "kept")]

    # BEGIN / COMMIT / ROLLBACK as statements, with autocommit=True too
    auto = sixfold.connect(sql_cluster.layout.find_writer_address(), autocommit=True)
    with contextlib.closing(auto):
        auto.execute("INSERT INTO tx VALUES (4, 'autocommitted')")
        assert not auto.in_transaction
        auto.execute("BEGIN")
        assert auto.in_transaction
        auto.execute("DELETE FROM tx")
        auto.execute("ROLLBACK")
        with pytest.raises(dbapi.OperationalError, match="cannot commit - no transaction"):
            auto.execute("COMMIT")
        auto.execute("begin transaction")
        with pytest.raises(dbapi.OperationalError, match="within a transaction"):
            auto.execute("BEGIN")
        auto.execute("UPDATE tx SET v = 'updated' WHERE id = 4")
        auto.execute("END")
    assert conn.execute("SELECT id, v FROM tx ORDER BY id").fetchall() == [
        (2, "kept"),
        (4, "updated"),
    ]


@pytest.mark.processes
def test_executemany_fetchmany_description_rowcount_lastrowid(conn: dbapi.Connection) -> None:
    cur = conn.cursor()
    cur.execute("CREATE TABLE many (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    assert cur.description is None and cur.rowcount == -1
    cur.executemany(
        "INSERT INTO many (name, score) VALUES (?, ?)", [(f"n{i}", i / 2) for i in range(50)]
    )
    assert cur.rowcount == 50 and conn.in_transaction
    conn.commit()
    cur.execute("INSERT INTO many (name, score) VALUES ('last', 0)")
    assert cur.lastrowid == 51 and cur.rowcount == 1
    cur.execute("UPDATE many SET score = score + 1 WHERE id <= 10")
    assert cur.rowcount == 10 and cur.lastrowid == 51
    conn.commit()
    cur.executemany("INSERT INTO many (name) VALUES (?)", [])
    assert cur.rowcount == 0

    cur.execute("SELECT id, name AS who, score FROM many ORDER BY id")
    assert [d[0] for d in cur.description] == ["id", "who", "score"]
    assert all(len(d) == 7 for d in cur.description)
    assert cur.rowcount == -1
    assert cur.fetchone() == (1, "n0", 1.0)
    cur.arraysize = 3
    assert [r[0] for r in cur.fetchmany()] == [2, 3, 4]
    assert [r[0] for r in cur.fetchmany(5)] == [5, 6, 7, 8, 9]
    assert [r[0] for r in cur][:2] == [10, 11]  # iteration goes on from there
    assert cur.fetchone() is None and cur.fetchall() == [] and cur.fetchmany(2) == []
    cur.close()
    with pytest.raises(dbapi.ProgrammingError, match="closed cursor"):
        cur.fetchone()


@pytest.mark.processes
def test_errors_keep_sqlites_message_and_the_connection_works_after(
    conn: dbapi.Connection,
) -> None:
    conn.execute("CREATE TABLE uniq (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("INSERT INTO uniq VALUES (1, 'one')")
    conn.commit()

    conn.execute("INSERT INTO uniq VALUES (2, 'two')")
    with pytest.raises(dbapi.IntegrityError) as info:
        conn.execute("INSERT INTO uniq VALUES (1, 'again')")
    assert str(info.value).startswith("UNIQUE constraint failed: uniq.id")
    assert not conn.in_transaction  # the failing transaction was rolled back, all of it
    assert conn.execute("SELECT id FROM uniq").fetchall() == [(1,)]

    with pytest.raises(dbapi.IntegrityError, match=r"NOT NULL constraint failed: uniq\.v"):
        conn.execute("INSERT INTO uniq VALUES (3, NULL)")
    with pytest.raises(dbapi.ProgrammingError) as info:
        conn.execute("SELEC 1")
    assert 'near "SELEC": syntax error' in str(info.value)
    with pytest.raises(dbapi.ProgrammingError):
        conn.execute("SELECT ?, ?", (1,))
    with pytest.raises(dbapi.OperationalError, match="no such table: nope"):
        conn.execute("SELECT * FROM nope")

    conn.execute("INSERT INTO uniq VALUES (4, 'four')")
    conn.commit()
    assert conn.execute("SELECT id FROM uniq ORDER BY id").fetchall() == [(1,), (4,)]


@pytest.mark.processes
def test_reader_sees_committed_rows_and_refuses_writes(
    sql_cluster: LocalCluster, conn: dbapi.Connection
) -> None:
    conn.execute("CREATE TABLE seen (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO seen VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.commit()
    for name in ("r1", "r2"):
        reader = reader_conn(sql_cluster, name)
        with contextlib.closing(reader):
            wait_for_rows(reader, "SELECT id, v FROM seen ORDER BY id", [(1, "a"), (2, "b")])
            cur = reader.cursor()
            assert cur.execute("SELECT v FROM seen WHERE id = 2").fetchall() == [("b",)]
            assert cur.read_point >= conn.last_commit_lsn
            with pytest.raises(dbapi.ReadOnlyError) as info:
                reader.execute("INSERT INTO seen VALUES (3, 'c')")
            assert "read-only" in str(info.value) and info.value.sixfold_error is not None
            assert not reader.in_transaction and reader.read_only
            with pytest.raises(dbapi.ReadOnlyError):
                reader.executemany("INSERT INTO seen VALUES (?, ?)", [(3, "c")])
            with pytest.raises(dbapi.NotSupportedError, match="is a reader"):
                reader.execute("BEGIN")
            reader.commit()  # no-ops on a reader
            reader.rollback()
            assert reader.execute("SELECT count(*) FROM seen").fetchone() == (2,)


def sixfold_cli(
    c: LocalCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(c.directory), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.processes
def test_sixfold_sql_command(sql_cluster: LocalCluster) -> None:
    c = sql_cluster
    created = sixfold_cli(
        c,
        "sql",
        "CREATE TABLE cli (id INTEGER PRIMARY KEY, name TEXT, data BLOB); "
        "INSERT INTO cli VALUES (1, 'ada', x'00ff'), (2, 'bob', NULL)",
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "INSERT 0 2"
    table = sixfold_cli(c, "sql", "SELECT id, name, data FROM cli ORDER BY id")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "id  name  data",
        "--  ----  -------",
        " 1  ada   x'00ff'",
        " 2  bob   NULL",
        "(2 rows)",
    ]
    doc = json.loads(sixfold_cli(c, "sql", "SELECT * FROM cli ORDER BY id", "--json").stdout)
    assert doc["columns"] == ["id", "name", "data"]
    assert doc["rows"] == [[1, "ada", {"blob_hex": "00ff"}], [2, "bob", None]]
    written = json.loads(sixfold_cli(c, "sql", "UPDATE cli SET name = 'x'", "--json").stdout)
    assert written["rows_changed"] == 2 and written["commit_lsn"] > 0

    failed = sixfold_cli(c, "sql", "INSERT INTO cli VALUES (1, 'dup', NULL)")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr == "sixfold: IntegrityError: UNIQUE constraint failed: cli.id\n"
    deadline = time.monotonic() + READER_LAG_LIMIT_S
    while True:
        read = sixfold_cli(c, "sql", "SELECT count(*) AS n FROM cli", "--reader", "r1", "--json")
        if read.returncode == 0 and json.loads(read.stdout)["rows"] == [[2]]:
            break
        assert time.monotonic() < deadline, read.stdout + read.stderr
        time.sleep(0.2)
    on_reader = sixfold_cli(c, "sql", "DELETE FROM cli", "--reader", "r1")
    assert on_reader.returncode == 1 and "ReadOnlyError" in on_reader.stderr
    assert len(on_reader.stderr.splitlines()) == 1


@pytest.mark.processes
def test_sixfold_shell_from_a_pipe(sql_cluster: LocalCluster) -> None:
    script = """\
.help
CREATE TABLE sh (id INTEGER PRIMARY KEY,
                 note TEXT);
INSERT INTO sh VALUES (1, 'semi;colon'); INSERT INTO sh VALUES (2, 'two');
BEGIN;
UPDATE sh SET note = 'gone' WHERE id = 2;
ROLLBACK;
BEGIN;
DELETE FROM sh
  WHERE id = 1;
COMMIT;
SELEC 1;
.tables
SELECT id, note FROM sh
"""
    result = sixfold_cli(sql_cluster, "shell", stdin=script)
    assert result.returncode == 1  # one statement failed (piped input, like sqlite3)
    assert result.stderr.strip().splitlines() == [
        'Error: ProgrammingError: near "SELEC": syntax error'
    ]
    out = result.stdout
    assert ".tables" in out  # the help text
    assert "UPDATE 1" in out
    assert out.rstrip().endswith("id  note\n--  ----\n 2  two\n(1 row)")
    assert "\nsh\n" in out  # .tables

    ok = sixfold_cli(
        sql_cluster, "shell", "--reader", "r1", stdin="SELECT 1 AS one;\n.quit\nSELECT 2;"
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["one", "---", "  1", "(1 row)"]


@pytest.mark.processes
def test_shell_in_process(conn: dbapi.Connection) -> None:
    """The shell class over a connection, with an open transaction left at the end."""
    out, err = io.StringIO(), io.StringIO()
    lines = ["CREATE TABLE shp (a);\n", "BEGIN;\n", "INSERT INTO shp VALUES (1);\n", ".bogus\n"]
    code = shell.Shell(conn, out, err, interactive=False).run(lines)
    assert code == 1 and "unknown command '.bogus'" in err.getvalue()
    assert "the open transaction was rolled back" in err.getvalue()
    assert conn.execute("SELECT count(*) FROM shp").fetchone() == (0,)


@pytest.mark.processes
def test_quorum_loss_outcome_unknown_then_resolved(sql_cluster: LocalCluster) -> None:
    """Last in the module: it kills AZ+1 of the shared cluster (and restarts it)."""
    c = sql_cluster
    conn = sixfold.connect(c.layout.find_writer_address(), timeout=30.0)
    try:
        conn.execute("CREATE TABLE quorum (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO quorum VALUES (1, 'sent before the loss')")
        c.kill("a1", "a2", "b1")
        # Sent before the writer saw the loss: outcome unknown. Or, if the writer saw it
        # first, refused without being sent: then it must never take effect.
        with pytest.raises(dbapi.OperationalError, match="write quorum unavailable") as info:
            conn.commit()
        first_refused = type(info.value) is dbapi.OperationalError
        if not first_refused:
            assert isinstance(info.value, dbapi.TransactionOutcomeUnknownError)
            assert "read the data back" in str(info.value)
        assert not conn.in_transaction
        # A write after the loss: refused (never sent) or, if it was sent, of unknown outcome.
        with pytest.raises(dbapi.OperationalError, match="write quorum unavailable") as second:
            conn.execute("INSERT INTO quorum VALUES (2, 'after the loss')")
            conn.commit()
        refused = type(second.value) is dbapi.OperationalError
        assert not conn.in_transaction
    finally:
        c.start("a1", "a2", "b1")
    # A fourth node is back: the unknown commit is durable, whole (or truncated: never half).
    deadline = time.monotonic() + 60
    while True:
        try:
            conn.execute("INSERT INTO quorum VALUES (3, 'after')")
            conn.commit()
            break
        except dbapi.OperationalError:
            assert time.monotonic() < deadline, "writes did not resume"
            time.sleep(0.5)
    ids = [r[0] for r in conn.execute("SELECT id FROM quorum ORDER BY id").fetchall()]
    assert 3 in ids and set(ids) <= {1, 2, 3}
    assert not (refused and 2 in ids), "a write refused with the quorum error took effect"
    assert not (first_refused and 1 in ids), "a commit refused before it was sent took effect"
    conn.close()


def test_the_execute_stream_pipelines_requests_and_answers_errors_in_band(
    sql_cluster: LocalCluster,
) -> None:
    # Several requests sent before any answer is read; a bad statement and a message that
    # is not an ExecuteStreamRequest are answered in band, and the stream goes on.
    import grpc

    from sixfold.rpc import sixfold_pb2 as pb

    def execute(sql: str) -> pb.ExecuteRequest:
        statement = pb.SqlStatement(sql=sql)
        request = pb.ExecuteRequest(statements=[statement], writer_only=True)
        return request

    requests = [
        pb.ExecuteStreamRequest(id=1, request=execute("CREATE TABLE IF NOT EXISTS piped(x)")),
        pb.ExecuteStreamRequest(id=2, request=execute("INSERT INTO piped VALUES (1)")),
        pb.ExecuteStreamRequest(id=3, request=execute("SELEC nothing")),
    ]
    raw = [r.SerializeToString() for r in requests]
    raw.insert(2, b"\xff\xff\xff not a message")
    raw.append(
        pb.ExecuteStreamRequest(
            id=4, request=execute("SELECT count(*) FROM piped")
        ).SerializeToString()
    )
    with grpc.insecure_channel(sql_cluster.layout.find_writer_address()) as channel:
        stream = channel.stream_stream(
            "/sixfold.v1.Sql/ExecuteStream",
            request_serializer=None,
            response_deserializer=pb.ExecuteStreamResponse.FromString,
        )
        answers = list(stream(iter(raw), timeout=30))
    by_id = {a.id: a for a in answers if a.id}
    assert len(answers) == 5 and set(by_id) == {1, 2, 3, 4}
    assert not by_id[1].error_code and not by_id[2].error_code
    assert by_id[2].response.commit_lsn > 0
    assert by_id[3].error_code == "INVALID_ARGUMENT" and "syntax error" in by_id[3].error_message
    refused = [a for a in answers if not a.id]
    assert refused[0].error_name == "InvalidRequestError"
    assert "not a valid ExecuteStreamRequest" in refused[0].error_message
    assert by_id[4].response.results[0].rows[0].values[0].integer >= 1


def test_a_connection_keeps_one_execute_stream_and_replaces_a_broken_one(
    sql_cluster: LocalCluster,
) -> None:
    connection = sixfold.connect(sql_cluster.layout.find_writer_address(), timeout=10.0)
    with contextlib.closing(connection):
        connection.execute("CREATE TABLE IF NOT EXISTS kept(x)")
        connection.commit()
        first = dict(connection._streams)
        for i in range(5):
            connection.execute("INSERT INTO kept VALUES (?)", (i,))
            connection.commit()
        assert connection._streams == first and len(first) == 1  # the same stream throughout
        (stream,) = first.values()
        stream._call.cancel()  # as if the connection to the server broke
        stream._reader.join(timeout=10)
        assert connection.execute("SELECT count(*) FROM kept").fetchone()[0] >= 5
        assert next(iter(connection._streams.values())) is not stream
    assert not connection._streams  # closed with the connection
