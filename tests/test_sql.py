"""SQL on the volume: SQLite on the writer and readers, through the redo VFS, real processes."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sixfold.client import dbapi
from sixfold.clients import ReaderClient
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.core.redo_delta import (
    CHUNK_BYTES,
    DELTA_HEADER_BYTES,
    _differing_spans,
    apply_delta,
    page_delta,
)
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.sql import layout as sql_layout
from tests.conftest import LocalCluster

ACCOUNTS = 60
OPENING_BALANCE = 100
PADDING = "x" * 400  # spreads the accounts over many pages: a torn snapshot would show


# -- the pure parts --------------------------------------------------------------------------


pages = st.just(bytes(PAGE_SIZE_BYTES)) | st.integers(0, 2**32).map(
    lambda seed: random.Random(seed).randbytes(PAGE_SIZE_BYTES)
)
edits = st.lists(
    st.tuples(st.integers(0, PAGE_SIZE_BYTES - 1), st.binary(min_size=1, max_size=64)), max_size=20
)


@given(pages, edits)
def test_page_delta_turns_old_into_new(old: bytes, changes: list[tuple[int, bytes]]) -> None:
    new = bytearray(old)
    for offset, data in changes:
        data = data[: PAGE_SIZE_BYTES - offset]
        new[offset : offset + len(data)] = data
    ranges = page_delta(old, bytes(new))
    assert apply_delta(old, ranges) == bytes(new)
    assert (
        sum(DELTA_HEADER_BYTES + len(d) for _, d in ranges) <= PAGE_SIZE_BYTES + DELTA_HEADER_BYTES
    )
    assert (ranges == ()) == (old == bytes(new))


@given(pages, edits)
@example(bytes(PAGE_SIZE_BYTES), [(0, b"a"), (31, b"b"), (32, b"c"), (PAGE_SIZE_BYTES - 1, b"d")])
@example(bytes(PAGE_SIZE_BYTES), [(0, b"\xff" * PAGE_SIZE_BYTES)])  # every byte
@example(bytes(PAGE_SIZE_BYTES), [(30, b"ab"), (63, b"c")])  # across chunk edges
def test_differing_spans_are_each_chunks_first_to_last_differing_byte(
    old: bytes, changes: list[tuple[int, bytes]]
) -> None:
    """The halving search finds what a walk of every chunk, byte by byte, finds."""
    new = bytearray(old)
    for offset, data in changes:
        new[offset : offset + len(data)] = data[: PAGE_SIZE_BYTES - offset]
    expected = []
    for base in range(0, PAGE_SIZE_BYTES, CHUNK_BYTES):
        differing = [i for i in range(base, base + CHUNK_BYTES) if old[i] != new[i]]
        if differing:
            expected.append((differing[0], differing[-1] + 1))
    assert _differing_spans(old, bytes(new)) == expected


def test_small_change_ships_small_delta() -> None:
    old = bytes(PAGE_SIZE_BYTES)
    new = bytearray(old)
    new[1000:1010] = b"0123456789"
    assert page_delta(old, bytes(new)) == ((1000, b"0123456789"),)


def test_commit_info_round_trip_and_foreign_meta_page() -> None:
    info = sql_layout.CommitInfo(db_pages=7, commit_time_us=123, commits=9)
    page = info.encode().ljust(PAGE_SIZE_BYTES, b"\0")
    assert sql_layout.decode_commit_info(page) == info
    assert sql_layout.decode_commit_info(bytes(PAGE_SIZE_BYTES)) == sql_layout.EMPTY_DATABASE
    with pytest.raises(Exception, match="not written by this SQL layer"):
        sql_layout.decode_commit_info(b"junk".ljust(PAGE_SIZE_BYTES, b"\0"))


def test_read_point_stamp_moves_the_change_counter() -> None:
    page1 = bytes(PAGE_SIZE_BYTES)
    a, b = sql_layout.stamp_read_point(page1, 10), sql_layout.stamp_read_point(page1, 11)
    assert a[24:28] != b[24:28] and a[24:28] == a[92:96]
    assert a[:24] == page1[:24] and a[28:92] == page1[28:92]


# -- real processes ----------------------------------------------------------------------------


def writer(c: LocalCluster, **kw) -> dbapi.Connection:
    return dbapi.connect(c.layout.find_writer_address(), timeout=30.0, **kw)


def reader(c: LocalCluster, name: str) -> dbapi.Connection:
    return dbapi.connect(c.layout.reader_address(name), timeout=30.0)


def insert_once_writes_resume(c: LocalCluster, w: dbapi.Connection, sql: str) -> None:
    """A fourth node is back: run `sql` as soon as the writer takes writes again, bounded."""
    c.wait_for(c.writer_ready, "the writer to take writes again")
    deadline = time.monotonic() + 30
    while True:
        try:
            w.execute(sql)
            return
        except dbapi.OperationalError:
            assert time.monotonic() < deadline, "writes did not resume"
            time.sleep(0.2)


def wait_rows(conn: dbapi.Connection, sql: str, expected: list, limit_s: float = 10.0) -> None:
    """Readers lag the writer a little: poll until they show `expected`, bounded. A reader
    whose read point is still before the table was made says so (a CI run met it)."""
    deadline = time.monotonic() + limit_s
    while (rows := _rows_or_why(conn, sql)) != expected:
        assert time.monotonic() < deadline, f"reader shows {rows}, expected {expected}"
        time.sleep(0.05)


def _rows_or_why(conn: dbapi.Connection, sql: str) -> list | str:
    try:
        return conn.execute(sql).fetchall()
    except dbapi.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return str(exc)


@pytest.mark.processes
def test_rows_written_on_the_writer_show_on_both_readers(local_cluster: LocalCluster) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, raw BLOB)")
    w.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)", [(i, f"n{i}", i / 2, bytes([i])) for i in range(50)]
    )
    expected = [(50, 1225, "n9")]  # max() of text compares as text
    sql = "SELECT count(*), sum(id), max(name) FROM t"
    assert w.execute(sql).fetchall() == expected
    for name in ("r1", "r2"):
        wait_rows(reader(c, name), sql, expected)
    assert w.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.processes
def test_reader_never_serves_a_page_from_an_older_read_point(local_cluster: LocalCluster) -> None:
    """SQLite keeps its page cache while page 1's change counter stays put, and the writer's
    exclusive lock means the counter does not move on commit: the read point stamp must."""
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER)")
    w.execute("INSERT INTO kv VALUES (1, 0)")
    r = reader(c, "r1")
    for value in range(1, 8):
        w.execute("UPDATE kv SET v = ? WHERE k = 1", (value,))
        lsn = w.last_commit_lsn
        c.wait_for(lambda lsn=lsn: c.reader_sees("r1", lsn), f"r1 to reach LSN {lsn}")
        # Both connections of the reader's pool, each with its own SQLite cache.
        for _ in range(4):
            assert r.execute("SELECT v FROM kv WHERE k = 1").fetchall() == [(value,)]
    # The reader brought its cached pages forward with their newer records, not whole.
    state = asyncio.run(_reader_state(c.layout.reader_address("r1")))
    assert state.sql_pages_forwarded > 0, state


@pytest.mark.processes
def test_bank_transfers_keep_the_total_in_every_reader_snapshot(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL, pad TEXT)")
    w.executemany(
        "INSERT INTO acct VALUES (?, ?, ?)",
        [(i, OPENING_BALANCE, PADDING) for i in range(ACCOUNTS)],
    )
    total = ACCOUNTS * OPENING_BALANCE
    for name in ("r1", "r2"):  # until then a reader may show the table before it was filled
        wait_rows(reader(c, name), "SELECT sum(bal), count(*) FROM acct", [(total, ACCOUNTS)])
    stop = threading.Event()
    seen: list[tuple] = []
    problems: list[str] = []

    def transfers(seed: int) -> None:
        rng = random.Random(seed)
        conn = writer(c)
        while not stop.is_set():
            a, b = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 30)
            conn.execute("UPDATE acct SET bal = bal - ? WHERE id = ?", (amount, a))
            conn.execute("UPDATE acct SET bal = bal + ? WHERE id = ?", (amount, b))
            conn.commit()

    def audits(name: str) -> None:
        conn = reader(c, name)
        while not stop.is_set():
            try:
                row = conn.execute("SELECT sum(bal), count(*) FROM acct").fetchone()
            except dbapi.Error as exc:
                problems.append(f"{name}: {exc}")
                continue
            seen.append(row)
            if row != (total, ACCOUNTS):
                problems.append(f"{name} saw {row}")

    threads = [threading.Thread(target=transfers, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=audits, args=(n,)) for n in ("r1", "r2")]
    for t in threads:
        t.start()
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join(30)
    assert not problems, problems[:5]
    assert len(seen) > 20, f"only {len(seen)} snapshots checked"
    assert w.execute("SELECT sum(bal) FROM acct").fetchone() == (total,)
    assert w.execute("SELECT count(DISTINCT bal) FROM acct").fetchone()[0] > 1, "no transfer ran"


@pytest.mark.processes
def test_writer_killed_under_load_loses_nothing_acknowledged(local_cluster: LocalCluster) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE a(id INTEGER PRIMARY KEY)")
    w.execute("CREATE TABLE b(id INTEGER PRIMARY KEY)")
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        conn = writer(c)
        for n in range(100_000):
            if stop.is_set():
                return
            key = worker * 1_000_000 + n
            try:
                conn.execute("INSERT INTO a VALUES (?)", (key,))
                conn.execute("INSERT INTO b VALUES (?)", (key,))
                conn.commit()
            except dbapi.Error:
                return  # the writer died: this one's outcome is unknown
            with lock:
                acked.add(key)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    c.wait_for(lambda: len(acked) >= 40, "some acknowledged transactions", 30)
    c.kill("writer")
    stop.set()
    for t in threads:
        t.join(30)
    c.start("writer")
    c.wait_for(c.writer_ready, "the writer to recover")
    w = writer(c, autocommit=True)
    in_a = {k for (k,) in w.execute("SELECT id FROM a").fetchall()}
    in_b = {k for (k,) in w.execute("SELECT id FROM b").fetchall()}
    assert acked <= in_a, f"acknowledged but lost: {sorted(acked - in_a)[:10]}"
    assert in_a == in_b, f"partly present: {sorted(in_a ^ in_b)[:10]}"
    assert w.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    w.execute("INSERT INTO a VALUES (-1)")  # and it takes writes again


@pytest.mark.processes
def test_az_plus_one_down_reads_go_on_and_writes_fail_clearly(local_cluster: LocalCluster) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE t(v TEXT)")
    w.execute("INSERT INTO t VALUES ('kept')")
    lsn = w.last_commit_lsn
    c.wait_for(lambda: c.reader_sees("r1", lsn), "r1 to see the insert")
    c.kill("a1", "a2", "b1")
    r = reader(c, "r1")
    assert r.execute("SELECT v FROM t").fetchall() == [("kept",)]
    with pytest.raises(dbapi.OperationalError, match="write quorum unavailable"):
        w.execute("INSERT INTO t VALUES ('lost?')")
    c.start("a1", "a2", "b1")
    insert_once_writes_resume(c, w, "INSERT INTO t VALUES ('after')")
    assert ("kept",) in w.execute("SELECT v FROM t").fetchall()


@pytest.mark.processes
def test_bad_sql_and_reader_writes_are_refused_and_the_writer_stays_healthy(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    w.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(dbapi.ProgrammingError, match="syntax error"):
        w.execute("SELEC * FROM t")
    with pytest.raises(dbapi.IntegrityError, match="UNIQUE constraint failed"):
        w.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        w.execute("SELECT * FROM missing")
    r = reader(c, "r2")
    wait_rows(r, "SELECT count(*) FROM t", [(1,)])
    with pytest.raises(dbapi.OperationalError, match="read-only"):
        r.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(dbapi.OperationalError, match="read-only"):
        r.execute("CREATE TABLE u(x)")
    w.execute("INSERT INTO t VALUES (2)")
    assert w.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    assert w.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.processes
def test_page_api_cannot_touch_the_sql_database(local_cluster: LocalCluster) -> None:
    with pytest.raises(Exception, match="belongs to the SQL database"):
        local_cluster.write(sql_layout.SQL_PAGE_BASE + 1, "clobber")


async def _reader_state(address: str) -> pb.ReaderState:
    client = ReaderClient(address, "r1")
    try:
        return await client.state()
    finally:
        await client.close()


async def _execute_all(address: str, sqls: list[str]) -> list[pb.ExecuteResponse | Exception]:
    """Send every statement at once, each its own request on one channel: the writer runs
    those that queue up as groups (issue 11)."""
    import grpc

    from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SqlStub(channel)
        calls = [
            stub.Execute(pb.ExecuteRequest(statements=[pb.SqlStatement(sql=s)]), timeout=30)
            for s in sqls
        ]
        return await asyncio.gather(*calls, return_exceptions=True)


@pytest.mark.processes
def test_concurrent_requests_commit_in_groups_and_fail_alone(local_cluster: LocalCluster) -> None:
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE g(k INTEGER PRIMARY KEY, v TEXT)")
    w.execute("INSERT INTO g VALUES (0, 'first')")
    sqls = [f"INSERT INTO g VALUES ({k}, 'v{k}')" for k in range(1, 61)]
    sqls[10] = "INSERT INTO g VALUES (0, 'duplicate')"  # fails alone: a constraint
    sqls[20] = "INSERT INTO nowhere VALUES (1)"  # fails alone: no such table
    sqls[30] = "SELECT count(*) FROM g"  # a read among the writes
    answers = asyncio.run(_execute_all(c.layout.find_writer_address(), sqls))
    failed = {i for i, a in enumerate(answers) if isinstance(a, Exception)}
    assert failed == {10, 20}, [answers[i] for i in sorted(failed)]
    lsns = [a.commit_lsn for i, a in enumerate(answers) if i not in failed | {30}]
    assert len(set(lsns)) == len(lsns) == 57 and min(lsns) > 0  # one commit each
    read = answers[30]
    assert read.commit_lsn == 0 and read.read_point >= w.last_commit_lsn
    expected = [(58,)]  # 0, and 57 inserts
    assert w.execute("SELECT count(*) FROM g").fetchall() == expected
    wait_rows(reader(c, "r1"), "SELECT count(*) FROM g", expected)
    assert w.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.processes
def test_a_group_that_cannot_reach_a_quorum_applies_nothing(local_cluster: LocalCluster) -> None:
    """With AZ+1 down, a group of commits is refused whole; SQLite is reopened, so none of
    them shows later, and writes resume once a fourth node is back."""
    c = local_cluster
    w = writer(c, autocommit=True)
    w.execute("CREATE TABLE q(k INTEGER PRIMARY KEY)")
    w.execute("INSERT INTO q VALUES (0)")
    c.kill("a1", "a2", "b1")
    with pytest.raises(dbapi.OperationalError, match="write quorum unavailable"):
        w.execute("INSERT INTO q VALUES (-1)")  # sent, in doubt: it may stay or not
    sqls = [f"INSERT INTO q VALUES ({k})" for k in range(1, 9)]
    answers = asyncio.run(_execute_all(c.layout.find_writer_address(), sqls))
    assert all(isinstance(a, Exception) for a in answers), answers
    assert all("nothing of this transaction was applied" in str(a) for a in answers), answers
    c.start("a1", "a2", "b1")
    insert_once_writes_resume(c, w, "INSERT INTO q VALUES (100)")
    rows = w.execute("SELECT k FROM q ORDER BY k").fetchall()
    assert rows in ([(0,), (100,)], [(-1,), (0,), (100,)]), rows
    assert w.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
