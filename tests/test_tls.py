"""Mutual TLS on every link (issue 17): a process cluster started with `sixfold up --tls`
serves over TLS only, to callers whose certificate its CA signed; plaintext, another CA's
certificate, no certificate and an expired one are refused, with a message that says why."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold import cluster, tls
from sixfold.auth import TokenFile
from sixfold.clients import NodeClient, NodeDownError, WriterClient
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

pytestmark = pytest.mark.processes


def sixfold(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("tls") / "c"
    base = cluster.free_base_port()
    up = sixfold(directory, "up", "--tls", "--detach", "--base-port", str(base))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "TLS: a CA and certificates" in up.stdout
        yield directory
    finally:
        sixfold(directory, "down")


def test_the_cli_works_over_tls_and_the_members_present_their_own(tls_cluster: Path) -> None:
    written = sixfold(tls_cluster, "page", "write", "7", "over tls")
    assert written.returncode == 0, written.stderr
    read = sixfold(tls_cluster, "page", "read", "7", "--reader", "r1", "--timeout", "20")
    assert read.stdout.strip() == "over tls", read.stderr
    layout = json.loads((tls_cluster / "cluster.json").read_text())
    assert layout["tls"] is True
    key = (tls_cluster / "tls" / "a1-key.pem").stat().st_mode & 0o777
    assert key == 0o600, "keys are the owner's only"
    status = sixfold(tls_cluster, "status", "--json")
    assert json.loads(status.stdout)["writer"]["up"], status.stderr
    # The writer's append stream and the readers' watches are on the nodes' frame ports,
    # over TLS too (sixfold/frames.py): three connections on each node.
    metrics = layout["processes"]["a1"]["metrics_port"]
    deadline = time.monotonic() + 20
    while (framed := _frame_connections(metrics)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert framed == 3, "the writer and both readers stream framed over TLS"


def _frame_connections(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("sixfold_node_frame_connections "):
            return float(line.split()[1])
    return 0.0


def _ports(directory: Path) -> dict[str, int]:
    processes = json.loads((directory / "cluster.json").read_text())["processes"]
    return {name: info["port"] for name, info in processes.items()}


def _get_state(address: str) -> str:
    async def ask() -> str:
        client = NodeClient("a1", address)
        try:
            await client.get_state(timeout=5.0)
            return "answered"
        except NodeDownError as exc:
            return str(exc)
        finally:
            await client.close()

    return asyncio.run(ask())


def test_plaintext_is_refused_and_told_why(
    tls_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in tls.TLS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    answer = _get_state(f"127.0.0.1:{_ports(tls_cluster)['a1']}")
    assert "this client speaks plaintext" in answer and tls.TLS_DIR_VARIABLE in answer, answer


def test_another_cas_certificate_is_refused(
    tls_cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls.init_certs(tmp_path / "other", [])
    monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(tmp_path / "other"))
    monkeypatch.delenv(tls.TLS_NAME_VARIABLE, raising=False)
    answer = _get_state(f"127.0.0.1:{_ports(tls_cluster)['a1']}")
    assert "TLS failed" in answer and "another" in answer, answer


def test_a_client_without_a_certificate_is_refused(tls_cluster: Path) -> None:
    ca = (tls_cluster / "tls" / tls.CA_CERT_FILE).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)  # checks the server only
    address = f"127.0.0.1:{_ports(tls_cluster)['a1']}"
    with grpc.secure_channel(address, credentials) as channel:
        stub = pb_grpc.StorageNodeStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetState(pb.GetStateRequest(), timeout=5.0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused(
    tls_cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed by the cluster's own CA, but expired yesterday."""
    source = tls_cluster / "tls"
    expired = tmp_path / "expired"
    expired.mkdir()
    (expired / tls.CA_CERT_FILE).write_bytes((source / tls.CA_CERT_FILE).read_bytes())
    ca_key = serialization.load_pem_private_key((source / tls.CA_KEY_FILE).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((source / tls.CA_CERT_FILE).read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tls.CLIENT_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (expired / tls.cert_file(tls.CLIENT_NAME)).write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
    )
    (expired / tls.key_file(tls.CLIENT_NAME)).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(expired))
    monkeypatch.delenv(tls.TLS_NAME_VARIABLE, raising=False)
    answer = _get_state(f"127.0.0.1:{_ports(tls_cluster)['a1']}")
    assert "answered" not in answer and "UNAVAILABLE" in answer, answer
    # The cluster's own client certificate, from the same CA, is let in.
    monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(source))
    assert _get_state(f"127.0.0.1:{_ports(tls_cluster)['a1']}") == "answered"


def test_a_tls_client_against_a_plaintext_server_is_told_why(
    local_cluster_plain: Path, tls_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(tls_cluster / "tls"))
    monkeypatch.delenv(tls.TLS_NAME_VARIABLE, raising=False)

    async def write() -> str:
        client = WriterClient(f"127.0.0.1:{_ports(local_cluster_plain)['writer']}")
        try:
            await client.write_pages([pb.PageChange(page_no=1, data=b"x")], timeout=5.0)
            return "answered"
        except NodeDownError as exc:
            return str(exc)
        finally:
            await client.close()

    answer = asyncio.run(write())
    assert "TLS failed: the server may speak plaintext" in answer, answer


@pytest.fixture
def local_cluster_plain(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "plain"
    base = cluster.free_base_port()
    up = sixfold(directory, "up", "--detach", "--base-port", str(base))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield directory
    finally:
        sixfold(directory, "down")


def test_a_region_of_a_tls_cluster_replicates_over_tls(tls_cluster: Path, tmp_path: Path) -> None:
    region = tmp_path / "region-b"
    up = sixfold(region, "up", "--region", "b", "--replica-of", str(tls_cluster))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert json.loads((region / "cluster.json").read_text())["tls"] is True
        assert sixfold(tls_cluster, "page", "write", "8", "to region b").returncode == 0
        deadline = time.monotonic() + 30
        while (read := sixfold(region, "page", "read", "8", "--reader", "r1")).stdout.strip() != (
            "to region b"
        ):
            assert time.monotonic() < deadline, read.stdout + read.stderr
            time.sleep(0.5)
    finally:
        removed = sixfold(tls_cluster, "global", "remove-region", "b")
    assert removed.returncode == 0, removed.stderr


def test_a_tls_cluster_passes_the_chaos_story_and_a_short_fuzz(tls_cluster: Path) -> None:
    chaos = sixfold(tls_cluster, "chaos", "--settle", "1", "--limit", "90")
    assert chaos.returncode == 0, chaos.stdout + chaos.stderr
    assert "write quorum unavailable: 3 of 6 storage nodes reachable, 4 needed" in chaos.stdout
    assert "\n  lost                                : 0\n" in chaos.stdout
    fuzz = sixfold(
        tls_cluster,
        "fuzz",
        "--time",
        "8",
        "--nemesis",
        "kill,pause",
        "--seed",
        "17",
        "--clients",
        "4",
    )
    assert fuzz.returncode == 0, fuzz.stdout + fuzz.stderr
    assert "verdict: ok" in fuzz.stdout, fuzz.stdout


# -- tokens and roles --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("auth") / "c"
    base = cluster.free_base_port()
    up = sixfold(directory, "up", "--tls", "--auth", "--detach", "--base-port", str(base))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield directory
    finally:
        sixfold(directory, "down")


def _token(directory: Path, name: str, role: str) -> str:
    made = sixfold(directory, "auth", "add", name, "--role", role)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_a_call_without_the_right_role_is_refused_and_changes_nothing(auth_cluster: Path) -> None:
    assert sixfold(auth_cluster, "page", "write", "5", "by the operator").returncode == 0
    reader = _token(auth_cluster, "reporter", "read")
    refusals = {
        "unknown": sixfold(auth_cluster, "--token", "not-a-token", "page", "write", "5", "x"),
        "read": sixfold(auth_cluster, "--token", reader, "page", "write", "5", "by a reader"),
    }
    for why, refused in refusals.items():
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, (why, refused)
    assert "not one this cluster accepts" in refusals["unknown"].stderr
    assert "needs role write; this token's role is read" in refusals["read"].stderr
    read = sixfold(auth_cluster, "--token", reader, "page", "read", "5")
    assert read.stdout.strip() == "by the operator", read.stderr
    # Admin only: a switchover (Instance/Drain, Instance/Promote) with a write token.
    writer = _token(auth_cluster, "app", "write")
    switch = sixfold(auth_cluster, "--token", writer, "switchover", "r1")
    assert switch.returncode == 1 and "needs role admin" in switch.stderr, switch


def test_tokens_rotate_without_a_restart(auth_cluster: Path) -> None:
    old = _token(auth_cluster, "rotating", "write")
    assert sixfold(auth_cluster, "--token", old, "page", "write", "6", "old token").returncode == 0
    new = _token(auth_cluster, "rotating-2", "write")
    assert sixfold(auth_cluster, "auth", "remove", "rotating").returncode == 0
    deadline = time.monotonic() + 10
    while sixfold(auth_cluster, "--token", old, "page", "write", "6", "stale").returncode == 0:
        assert time.monotonic() < deadline, "a removed token was still taken"
    assert sixfold(auth_cluster, "--token", new, "page", "write", "6", "new").returncode == 0
    stored = (auth_cluster / "auth" / cluster.TOKENS_FILE).read_text()
    assert new not in stored and old not in stored, "only hashes are kept"


def test_a_token_is_taken_the_moment_it_is_added(auth_cluster: Path) -> None:
    """A server looks at its token file at most once a second for tokens it knows; one it
    does not know may be new, and is looked up at once (a CI run used a token just added,
    within that second, and was refused)."""
    address = f"127.0.0.1:{_ports(auth_cluster)['a1']}"
    files = tls._load(str(auth_cluster / "tls"), tls.CLIENT_NAME)
    certificate = grpc.ssl_channel_credentials(files.ca, files.key, files.cert)
    tokens = TokenFile(auth_cluster / "auth" / cluster.TOKENS_FILE)
    operator = (auth_cluster / "auth" / cluster.OPERATOR_TOKEN_FILE).read_text().strip()

    def get_state(token: str) -> None:
        with_token = grpc.access_token_call_credentials(token)
        credentials = grpc.composite_channel_credentials(certificate, with_token)
        with grpc.secure_channel(address, credentials) as channel:
            pb_grpc.StorageNodeStub(channel).GetState(pb.GetStateRequest(), timeout=5.0)

    for round_no in range(3):
        get_state(operator)  # the server has just read its file
        get_state(tokens.add(f"at-once-{round_no}", "read"))


def test_health_checks_stay_open_and_a_certificate_alone_gets_nothing_else(
    auth_cluster: Path,
) -> None:
    address = f"127.0.0.1:{_ports(auth_cluster)['a1']}"
    files = tls._load(str(auth_cluster / "tls"), tls.CLIENT_NAME)
    credentials = grpc.ssl_channel_credentials(files.ca, files.key, files.cert)
    with grpc.secure_channel(address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # The client's certificate alone (no token) is not enough for anything else.
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.StorageNodeStub(channel).GetState(pb.GetStateRequest(), timeout=5.0)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "none given" in (refused.value.details() or "")
    writer = f"127.0.0.1:{_ports(auth_cluster)['writer']}"
    with grpc.secure_channel(writer, credentials) as channel:
        change = pb.PageChange(page_no=5, data=b"no token")
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.WriterStub(channel).WritePages(
                pb.WritePagesRequest(changes=[change]), timeout=5.0
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_dbapi_client_takes_its_token_and_certificates_as_arguments(
    auth_cluster: Path,
) -> None:
    token = _token(auth_cluster, "sql-app", "write")
    writer = f"127.0.0.1:{_ports(auth_cluster)['writer']}"
    script = (
        "import sixfold, sys\n"
        f"c = sixfold.connect({writer!r}, token=sys.argv[1], tls_dir={str(auth_cluster / 'tls')!r})\n"
        "cur = c.cursor()\n"
        "cur.execute('CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)')\n"
        "cur.execute('INSERT INTO t (v) VALUES (?)', ('hello',))\n"
        "c.commit()\n"
        "print(cur.execute('SELECT count(*) FROM t').fetchone()[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*tls.TLS_VARIABLES, tls.TOKEN_VARIABLE)}
    ran = subprocess.run(
        [sys.executable, "-c", script, token], capture_output=True, text=True, timeout=60, env=env
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "1", ran.stdout + ran.stderr
    refused = subprocess.run(
        [sys.executable, "-c", script, "wrong"], capture_output=True, text=True, timeout=60, env=env
    )
    assert refused.returncode != 0 and "not one this cluster accepts" in refused.stderr
