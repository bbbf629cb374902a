"""The local cluster: six storage nodes, a writer and two readers as processes on loopback.

Its layout (ports, pids) lives in DIR/cluster.json; data in DIR/NAME, logs in DIR/logs.
Ports are picked once and kept, so a killed process restarts at the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from sixfold import tls
from sixfold.auth import AUTH_FILE_VARIABLE, TokenFile
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import AZS, NODE_NAMES, SPARE_NAMES, STORAGE_NAMES, nodes_in_az
from sixfold.frames import FRAME_PORT_OFFSET

DEFAULT_DIR = Path(".sixfold")
READER_NAMES = ("r1", "r2")
WRITER_NAME = "writer"
INSTANCE_NAMES = (WRITER_NAME, *READER_NAMES)  # any of them may be the writer (issue 6)
ALL_NAMES = (*NODE_NAMES, *INSTANCE_NAMES)  # every cluster has these; spares only if started
INTERPOSER_NAME = "interposer"  # only in a partitionable cluster (`sixfold up --partitionable`)
HOST = "127.0.0.1"
AGENT_NAME = "agent"  # a secondary region's replication agent, in place of a writer
MEMBER_NAMES = (*STORAGE_NAMES, *INSTANCE_NAMES, AGENT_NAME)  # every process with a certificate
PRIMARY_REGION_DEFAULT = "primary"
REGION_STATUS_FILE = "region.json"  # the agent's status, in the secondary's directory
STOP_GRACE_S = 5.0


class NoClusterError(SixfoldError):
    """No cluster.json where the command looked: nothing was started there."""


@dataclass
class ProcessInfo:
    name: str
    role: str  # "node", "writer", "reader" or "interposer"
    port: int
    pid: int = 0
    metrics_port: int = 0  # Prometheus metrics over HTTP (0: none)
    frame_port: int = 0  # a node's framed streams (sixfold/frames.py; 0: none)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{HOST}:{self.metrics_port}/metrics" if self.metrics_port else None


@dataclass
class ClusterLayout:
    directory: str
    processes: dict[str, ProcessInfo] = field(default_factory=dict)
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    # Partitionable clusters only: "src>dst" -> the interposer's port for that directed link.
    links: dict[str, int] = field(default_factory=dict)
    # Each cluster's volume has an id of its own, passed to its nodes: a restore or a clone
    # is a new volume. "": a directory from before ids (its nodes name none).
    volume_id: str = ""
    # Global database (issue 16): this cluster's region; for a secondary, the primary's
    # directory (it then runs a replication agent instead of a writer); for the primary, its
    # secondaries' directories by name.
    region: str = ""
    replica_of: str = ""
    regions: dict[str, str] = field(default_factory=dict)
    # A former primary failed over from: its data may hold commits past the divergence
    # point, so it is set aside and seeded again before it runs as a secondary.
    rewind_pending: bool = False
    # Every link speaks mutual TLS (issue 17), with the certificates in DIR/tls
    # (`sixfold up --tls`); loading the layout turns TLS on for this process's channels.
    tls: bool = False
    # Callers need a token with a role (issue 17; sixfold/auth.py), kept hashed in
    # DIR/auth/tokens.json; the operator's admin token is in DIR/auth/operator.token.
    auth: bool = False

    @property
    def tls_dir(self) -> Path:
        return Path(self.directory) / TLS_SUBDIR

    @property
    def auth_dir(self) -> Path:
        return Path(self.directory) / AUTH_SUBDIR

    @property
    def region_name(self) -> str:
        return self.region or PRIMARY_REGION_DEFAULT

    @property
    def partitionable(self) -> bool:
        return bool(self.links)

    @property
    def nodes(self) -> dict[str, str]:
        """Where clients reach the storage nodes, spares included (the membership says which
        hold a position): always direct, never through the interposer."""
        return {n: self.processes[n].address for n in self.storage_names}

    @property
    def storage_names(self) -> list[str]:
        """The storage node processes: a1 ... c2, and the spares a3 b3 c3 if started."""
        return [n for n in STORAGE_NAMES if n in self.processes]

    @property
    def spares(self) -> list[str]:
        return [n for n in SPARE_NAMES if n in self.processes]

    def node_address_for(self, src: str, node: str) -> str:
        """The address `src` uses to reach `node`: through the interposer when partitionable
        (spares added later are reached directly)."""
        link = self.links.get(link_key(src, node))
        return self.processes[node].address if link is None else f"{HOST}:{link}"

    def find_writer_address(self) -> str:
        """The current writer: asked of the instances over the network (it blocks: async
        callers run it in a thread), since a reader may have taken over; the instance
        started as the writer when none answers."""
        from sixfold.client.discovery import current_writer_address

        seeds = [self.processes[n].address for n in INSTANCE_NAMES]
        return current_writer_address(seeds, fallback=self.processes[WRITER_NAME].address)

    def reader_address(self, name: str) -> str:
        """Any instance may be a reader now (roles follow the topology); a name is enough."""
        return self.instance_address(name)

    def instance_address(self, name: str) -> str:
        return instance_address_in(self.processes, name)

    def metrics_url(self, name: str) -> str | None:
        return self.processes[name].metrics_url

    def save(self) -> None:
        path = Path(self.directory) / "cluster.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> ClusterLayout:
        path = directory / "cluster.json"
        if not path.exists():
            raise NoClusterError(
                f"no cluster in {directory}: start one with `sixfold --dir {directory} up`"
            )
        raw = json.loads(path.read_text())
        layout = cls(
            raw["directory"],
            extra_args=raw.get("extra_args", {}),
            links=raw.get("links", {}),
            volume_id=raw.get("volume_id", ""),
            region=raw.get("region", ""),
            replica_of=raw.get("replica_of", ""),
            tls=raw.get("tls", False),
            auth=raw.get("auth", False),
            regions=raw.get("regions", {}),
            rewind_pending=raw.get("rewind_pending", False),
        )
        layout.processes = {k: ProcessInfo(**v) for k, v in raw["processes"].items()}
        if layout.tls:
            use_tls(layout)
        return layout


def use_tls(layout: ClusterLayout) -> None:
    """This process talks to `layout`'s members over TLS, as a client: every channel it
    opens from now on (sixfold/tls.py), with the operator's token where the cluster asks
    for tokens. What the environment already chose (a member's own, a user's token) is kept."""
    os.environ.setdefault(tls.TLS_DIR_VARIABLE, str(layout.tls_dir))
    operator = layout.auth_dir / OPERATOR_TOKEN_FILE
    if layout.auth and operator.exists():
        os.environ.setdefault(tls.TOKEN_VARIABLE, operator.read_text().strip())


def share_security(layout: ClusterLayout, primary: ClusterLayout) -> None:
    """A secondary region of a TLS primary speaks TLS with the primary's CA (its agent is a
    member to the primary's nodes, and the other way round), with certificates of its own,
    and asks for the primary's tokens (the same file: a rotation covers both)."""
    if not primary.tls:
        return
    layout.tls_dir.mkdir(parents=True, exist_ok=True)
    for name in (tls.CA_CERT_FILE, tls.CA_KEY_FILE):
        target = layout.tls_dir / name
        target.write_bytes((primary.tls_dir / name).read_bytes())
        target.chmod((primary.tls_dir / name).stat().st_mode & 0o777)
    enable_tls(layout)
    if primary.auth:
        if not layout.auth_dir.exists():
            layout.auth_dir.symlink_to(primary.auth_dir.resolve(), target_is_directory=True)
        layout.auth = True


def enable_auth(layout: ClusterLayout) -> bool:
    """Ask callers for tokens (kept in cluster.json): the token file, with an admin token
    for the operator in DIR/auth (readable by its owner only), made if missing. Needs TLS.
    Whether a token was made."""
    if not layout.tls:
        raise SixfoldError(
            "--auth needs TLS: tokens must not cross the network in the clear (add --tls)"
        )
    layout.auth = True
    operator = layout.auth_dir / OPERATOR_TOKEN_FILE
    if operator.exists():
        return False
    tokens = TokenFile(layout.auth_dir / TOKENS_FILE)
    if any(t.name == OPERATOR_TOKEN_NAME for t in tokens.load()):
        tokens.remove(OPERATOR_TOKEN_NAME)  # its secret is lost: a new one
    token = tokens.add(OPERATOR_TOKEN_NAME, "admin")
    operator.write_text(token + "\n")
    operator.chmod(0o600)
    return True


def enable_tls(layout: ClusterLayout) -> list[str]:
    """Turn TLS on for `layout` (kept in cluster.json): a CA and a certificate for each of
    its processes in DIR/tls, made if missing; the files written."""
    missing = [n for n in layout.processes if not (layout.tls_dir / tls.cert_file(n)).exists()]
    written = tls.init_certs(layout.tls_dir, missing) if missing else []
    layout.tls = True
    use_tls(layout)
    return written


def instance_address_in(processes: dict[str, ProcessInfo], name: str) -> str:
    if name not in INSTANCE_NAMES:
        raise SixfoldError(
            f"unknown instance {name!r}: the instances are {', '.join(INSTANCE_NAMES)}"
        )
    return processes[name].address


# Ports are picked when the layout is made and bound later, when each process starts. Picked
# from below Linux's ephemeral range (32768-60999 by default), no outgoing connection's source
# port can take one in between, as happened with ports the kernel handed out.
TLS_SUBDIR = "tls"  # a TLS cluster's CA and certificates, in its directory
AUTH_SUBDIR = "auth"  # its tokens (hashed) and the operator's own
TOKENS_FILE = "tokens.json"
OPERATOR_TOKEN_FILE = "operator.token"
OPERATOR_TOKEN_NAME = "operator"
PORT_RANGE = (20_000, 32_000)
# SIXFOLD_PORT_RANGE=LO-HI narrows it: test workers running side by side (pytest-xdist) each
# pick from a range of their own, so two never pick the same port between pick and bind.
PORT_RANGE_VARIABLE = "SIXFOLD_PORT_RANGE"
PORT_TRIES_MAX = 200


def port_range() -> tuple[int, int]:
    """Where ports are picked: PORT_RANGE, or SIXFOLD_PORT_RANGE within it."""
    raw = os.environ.get(PORT_RANGE_VARIABLE, "")
    if not raw:
        return PORT_RANGE
    low, _, high = raw.partition("-")
    try:
        picked = int(low), int(high)
    except ValueError:
        raise SixfoldError(
            f"{PORT_RANGE_VARIABLE}={raw!r}: give LOW-HIGH, e.g. 20000-26000"
        ) from None
    if not PORT_RANGE[0] <= picked[0] < picked[1] - 2 * METRICS_PORT_OFFSET <= PORT_RANGE[1]:
        raise SixfoldError(
            f"{PORT_RANGE_VARIABLE}={raw!r}: give a range within {PORT_RANGE[0]}-{PORT_RANGE[1]} "
            f"at least {2 * METRICS_PORT_OFFSET} ports wide"
        )
    return picked


# Ports handed out are remembered, and not handed out again, until this many newer ones
# were: a port picked but not bound yet (its process still starting) is not free, whatever a
# bind says; once bound, a bind says so. Remembered for good, they filled the range in a
# long test run, and a block of free ports could no longer be found.
HANDED_OUT_PORTS_MAX = 600  # 16 clusters' blocks (36 ports each: gRPC, metrics, frames)


class _RecentPorts:
    """The last HANDED_OUT_PORTS_MAX ports handed out, oldest first."""

    def __init__(self) -> None:
        self._ports: dict[int, None] = {}  # insertion-ordered

    def __contains__(self, port: object) -> bool:
        return port in self._ports

    def isdisjoint(self, ports: Iterable[int]) -> bool:
        return not any(p in self._ports for p in ports)

    def add(self, port: int) -> None:
        self._ports.pop(port, None)
        self._ports[port] = None
        while len(self._ports) > HANDED_OUT_PORTS_MAX:
            del self._ports[next(iter(self._ports))]

    def update(self, ports: Iterable[int]) -> None:
        for port in ports:
            self.add(port)


_handed_out = _RecentPorts()  # ports this process picked lately: not twice


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range."""
    rng = random.Random()
    low, high = port_range()
    for _ in range(PORT_TRIES_MAX):
        port = rng.randrange(low, high - METRICS_PORT_OFFSET)  # its metrics' port in range too
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise SixfoldError(f"no free port on {HOST} in {low}-{high} after {PORT_TRIES_MAX} tries")


# The same ports as docker-compose.yml, so a client's addresses work on either cluster.
BASE_PORT_DEFAULT = 7100
READER_PORT_OFFSET = 101  # r1 at base + 101, r2 at base + 102
METRICS_PORT_OFFSET = 1000  # each process's metrics 1000 above its gRPC port: 8100, 8101, ...
SPARE_PORT_OFFSET = 7  # spares a3 b3 c3 at base + 7, 8, 9 (after the six nodes)


def ports_from(base_port: int) -> dict[str, int]:
    """The port of each process: the writer at `base_port`, nodes a1..c2 at base + 1..6,
    spares a3 b3 c3 (if started) at base + 7..9, readers r1, r2 at base + 101, 102."""
    ports = {WRITER_NAME: base_port}
    ports.update({name: base_port + 1 + i for i, name in enumerate(NODE_NAMES)})
    ports.update({n: base_port + SPARE_PORT_OFFSET + i for i, n in enumerate(SPARE_NAMES)})
    ports.update({name: base_port + READER_PORT_OFFSET + i for i, name in enumerate(READER_NAMES)})
    return ports


def check_base_port(base_port: int) -> None:
    ports = ports_from(base_port)
    top = max(
        max(ports.values()) + METRICS_PORT_OFFSET,
        max(ports[n] for n in STORAGE_NAMES) + FRAME_PORT_OFFSET,
    )
    if base_port < 1024 or top > 65535:
        raise SixfoldError(
            f"--base-port {base_port}: the cluster uses ports {base_port}-{base_port + 9} and "
            f"{base_port + READER_PORT_OFFSET}-{base_port + READER_PORT_OFFSET + 1}, 1000 "
            f"above each for metrics and {FRAME_PORT_OFFSET} above each node's for its framed "
            f"streams; choose a base from 1024 to {base_port - top + 65535}"
        )


def check_ports_free(layout: ClusterLayout) -> None:
    """Refuse to start when another program holds one of the layout's ports, naming it."""
    for link, port in layout.links.items():  # a partitionable cluster's interposer links
        if not _bindable(port):
            raise SixfoldError(
                f"port {port} (the interposer's link {link}) on {HOST} is taken: stop what "
                "holds it, or start this cluster in a new --dir"
            )
    for name, info in layout.processes.items():
        taken = [
            (p, what)
            for p, what in (
                (info.port, ""),
                (info.metrics_port, " metrics"),
                (0 if layout.partitionable else info.frame_port, " frames"),
            )
            if p and not _bindable(p)
        ]
        if not taken:
            continue
        port, what = taken[0]
        raise SixfoldError(
            f"port {port} ({name}{what}) on {HOST} is taken: another sixfold cluster (`sixfold "
            "status`, `docker compose ps`) or another program uses it. Stop it, or move this "
            "cluster with `up --base-port N` (ports N to N+6, N+101 and N+102)"
        )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's servers bind
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ensure_metrics_ports(layout: ClusterLayout) -> None:
    """Give metrics ports to the processes of a cluster laid out before metrics existed, and
    frame ports to its nodes if laid out before those."""
    for info in layout.processes.values():
        if not info.metrics_port and info.role != "interposer":
            wanted = info.port + METRICS_PORT_OFFSET
            info.metrics_port = wanted if _claim(wanted) else free_port()
        if not info.frame_port and info.role == "node":
            wanted = info.port + FRAME_PORT_OFFSET
            info.frame_port = wanted if _claim(wanted) else free_port()


def _claim(port: int) -> bool:
    """Take `port` if it is free now and this process handed it out to no one: a port
    picked for one process of a layout (a spare's, a metrics port) must not be the port
    another got, which is bound only once that one starts."""
    if port > 65535 or port in _handed_out or not _bindable(port):
        return False
    _handed_out.add(port)
    return True


def free_base_port(tries_max: int = PORT_TRIES_MAX) -> int:
    """A base port whose whole block is free (for tests and tools beside a running cluster)."""
    rng = random.Random()
    low, high = port_range()
    for _ in range(tries_max):
        base = rng.randrange(low, high - METRICS_PORT_OFFSET - READER_PORT_OFFSET - 2)
        ports = [
            p + offset
            for p in ports_from(base).values()
            for offset in (0, METRICS_PORT_OFFSET, FRAME_PORT_OFFSET)
        ]
        if _handed_out.isdisjoint(ports) and all(_bindable(p) for p in ports):
            _handed_out.update(ports)
            return base
    raise SixfoldError(f"no free block of ports on {HOST} after {tries_max} tries")


def link_key(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def new_layout(
    directory: Path, partitionable: bool = False, base_port: int | None = None
) -> ClusterLayout:
    """A cluster's processes and ports: from `base_port` (see `ports_from`), or each port
    picked free when None (tests and benchmarks, which may run beside a user's cluster)."""
    layout = ClusterLayout(str(directory.resolve()), volume_id=uuid.uuid4().hex)
    set_ports(layout, base_port)
    if partitionable:
        make_partitionable(layout)
    return layout


def replica_layout(
    directory: Path, primary: ClusterLayout, region: str, base_port: int | None
) -> ClusterLayout:
    """A secondary region of `primary`'s volume: its nodes and readers, and a replication
    agent where a primary has its writer (on the writer's port, for its metrics)."""
    layout = ClusterLayout(
        str(directory.resolve()),
        volume_id=primary.volume_id,
        region=region,
        replica_of=primary.directory,
    )
    set_ports(layout, base_port)
    writer = layout.processes.pop(WRITER_NAME)
    layout.processes[AGENT_NAME] = ProcessInfo(AGENT_NAME, "agent", writer.port)
    return layout


def set_ports(layout: ClusterLayout, base_port: int | None) -> None:
    ports = ports_from(base_port) if base_port is not None else {}
    roles = {name: "node" for name in NODE_NAMES}
    roles.update({WRITER_NAME: "writer"}, **{name: "reader" for name in READER_NAMES})
    for name, role in roles.items():
        port = ports.get(name) or free_port()
        metrics_port = port + METRICS_PORT_OFFSET if name in ports else free_port()
        layout.processes[name] = ProcessInfo(name, role, port, metrics_port=metrics_port)
        if role == "node":
            layout.processes[name].frame_port = (
                port + FRAME_PORT_OFFSET if name in ports else free_port()
            )


def add_spares(layout: ClusterLayout) -> list[str]:
    """Add one spare storage node per AZ (a3 b3 c3) to the layout; returns those added."""
    wanted = ports_from(layout.processes[WRITER_NAME].port)
    added = []
    for name in SPARE_NAMES:
        if name in layout.processes:
            continue
        port = wanted[name]
        if port > 65535 - METRICS_PORT_OFFSET or not _claim(port):
            port = free_port()
        metrics = port + METRICS_PORT_OFFSET
        if not _claim(metrics):
            metrics = free_port()
        frame = port + FRAME_PORT_OFFSET
        if not _claim(frame):
            frame = free_port()
        layout.processes[name] = ProcessInfo(
            name, "node", port, metrics_port=metrics, frame_port=frame
        )
        added.append(name)
    return added


def make_partitionable(layout: ClusterLayout) -> None:
    """Route every member-to-node link through an interposer (sixfold/tools/interposer.py).

    Opt-in: the default cluster talks directly, with no extra hop on the commit path.
    """
    if layout.partitionable:
        return
    used = {info.port for info in layout.processes.values()}
    layout.processes[INTERPOSER_NAME] = ProcessInfo(INTERPOSER_NAME, "interposer", free_port())
    used.add(layout.processes[INTERPOSER_NAME].port)
    for src in (*NODE_NAMES, WRITER_NAME, *READER_NAMES):
        for node in NODE_NAMES:
            if src != node:
                layout.links[link_key(src, node)] = _unused_port(used)


def _unused_port(used: set[int], tries_max: int = 100) -> int:
    """A free port not already given out: bind(0) may hand the same one out twice."""
    for _ in range(tries_max):
        port = free_port()
        if port not in used:
            used.add(port)
            return port
    raise SixfoldError(f"no unused loopback port found in {tries_max} tries")


def command_for(layout: ClusterLayout, name: str) -> list[str]:
    info = layout.processes[name]
    directory = Path(layout.directory)
    if info.role == "interposer":
        return [
            sys.executable,
            "-m",
            "sixfold.tools.interposer",
            "--dir",
            str(directory),
            "--port",
            str(info.port),
        ]
    nodes = ",".join(
        f"{n}={layout.node_address_for(name, n)}" for n in layout.storage_names if n != name
    )
    if info.role == "node":
        cmd = [
            sys.executable,
            "-m",
            "storage_node",
            "--name",
            name,
            "--data-dir",
            str(directory / name),
            "--port",
            str(info.port),
            "--peers",
            nodes,
        ]
        if layout.volume_id:
            cmd += ["--volume-id", layout.volume_id]
        # Through the interposer every link can be cut: framed streams, which would go to
        # the node itself, stay off there.
        cmd += ["--frame-port", str(0 if layout.partitionable else info.frame_port)]
    elif info.role == "writer":
        cmd = [sys.executable, "-m", "writer", "--nodes", nodes, "--port", str(info.port)]
    elif info.role == "agent":
        primary = ClusterLayout.load(Path(layout.replica_of)).nodes
        return [
            sys.executable,
            "-m",
            "sixfold.region",
            "--region",
            layout.region,
            "--primary-nodes",
            ",".join(f"{n}={a}" for n, a in primary.items()),
            "--nodes",
            ",".join(f"{n}={a}" for n, a in layout.nodes.items()),
            "--port",
            str(info.port),
            "--status-file",
            str(directory / REGION_STATUS_FILE),
        ]
    else:
        # r1 takes over a dead writer first, r2 half a second later if r1 did not.
        rank = READER_NAMES.index(name) if name in READER_NAMES else len(READER_NAMES)
        cmd = [
            sys.executable,
            "-m",
            "reader",
            "--name",
            name,
            "--nodes",
            nodes,
            "--port",
            str(info.port),
            "--promotion-rank",
            str(rank),
        ]
        if layout.replica_of:  # a secondary region has no writer to take over from
            cmd.append("--no-takeover")
    if info.metrics_port:
        cmd += ["--metrics-port", str(info.metrics_port)]
    # Instances share the writer's settings: any of them may become the writer.
    extra = layout.extra_args.get("writer", []) if info.role == "reader" else []
    return cmd + extra + layout.extra_args.get(info.role, [])


def is_running(info: ProcessInfo) -> bool:
    """True when the recorded pid is alive and is this process (not a reused pid)."""
    if info.pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{info.pid}/stat").read_text().split()
    except OSError:
        return False
    if len(status) > 2 and status[2] == "Z":
        return False
    port = str(info.port).encode()
    return port in cmdline


def spawn(layout: ClusterLayout, name: str) -> None:
    info = layout.processes[name]
    if is_running(info):
        return
    logs = Path(layout.directory) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in tls.TLS_VARIABLES}
    env.pop(AUTH_FILE_VARIABLE, None)
    if layout.tls:  # the member presents its own certificate, and asks for one
        env[tls.TLS_DIR_VARIABLE] = str(layout.tls_dir)
        env[tls.TLS_NAME_VARIABLE] = name
    if layout.auth:  # and asks callers that are not members for a token
        env[AUTH_FILE_VARIABLE] = str(layout.auth_dir / TOKENS_FILE)
    with open(logs / f"{name}.log", "ab") as log_file:
        proc = subprocess.Popen(
            command_for(layout, name),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
            env=env,
        )
    info.pid = proc.pid


def resolve_names(names: list[str], az: str | None) -> list[str]:
    """Names given on the command line, or the nodes of an AZ, checked."""
    chosen = list(names)
    if az:
        if az not in AZS:
            raise SixfoldError(
                f"unknown availability zone {az!r}: expected one of {', '.join(AZS)}"
            )
        chosen += nodes_in_az(az)
    known = (*ALL_NAMES, *SPARE_NAMES, AGENT_NAME)
    for n in chosen:
        if n not in known:
            raise SixfoldError(f"unknown process {n!r}: expected one of {', '.join(known)}")
    if not chosen:
        raise SixfoldError("name at least one process, or an AZ with --az")
    return list(dict.fromkeys(chosen))


def check_in_layout(layout: ClusterLayout, names: list[str]) -> None:
    """Names a command was given that this cluster has no process for (a secondary region
    has an agent and no writer; spares exist once started)."""
    missing = [n for n in names if n not in layout.processes]
    if missing:
        raise SixfoldError(
            f"no process {', '.join(missing)} in the cluster in {layout.directory}: it has "
            f"{', '.join(layout.processes)}"
        )


def start_processes(layout: ClusterLayout, names: list[str]) -> None:
    check_in_layout(layout, names)
    layout.save()  # the interposer reads its links from cluster.json as it starts
    # The interposer first: every link of a partitionable cluster goes through it.
    for name in sorted(names, key=lambda n: n != INTERPOSER_NAME):
        spawn(layout, name)
    layout.save()


def kill_processes(layout: ClusterLayout, names: list[str], sig: int = signal.SIGKILL) -> list[str]:
    check_in_layout(layout, names)
    killed = []
    for name in names:
        info = layout.processes[name]
        if is_running(info):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, sig)
            killed.append(name)
    return killed


def stop_all(layout: ClusterLayout) -> list[str]:
    """SIGTERM everything, then SIGKILL what has not exited within the grace period."""
    return stop_processes(layout, list(layout.processes))


def stop_processes(layout: ClusterLayout, names: list[str]) -> list[str]:
    """SIGTERM `names`, then SIGKILL what has not exited within the grace period."""
    stopped = kill_processes(layout, names, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(is_running(layout.processes[n]) for n in stopped):
        time.sleep(0.05)
    kill_processes(layout, stopped, signal.SIGKILL)
    for name in names:
        layout.processes[name].pid = 0
    layout.save()
    return stopped


# -- status ---------------------------------------------------------------------------------------


class Endpoints(Protocol):
    """Where a cluster's members answer: the process cluster and the compose one alike."""

    @property
    def nodes(self) -> dict[str, str]: ...

    def find_writer_address(self) -> str: ...

    def reader_address(self, name: str) -> str: ...

    def instance_address(self, name: str) -> str: ...

    def metrics_url(self, name: str) -> str | None: ...


async def wait_healthy(layout: ClusterLayout, timeout_s: float) -> dict:
    """Wait until all nodes serve, the writer has recovered and readers have a read point."""
    from sixfold.tools.status import Health, gather_status

    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = await gather_status(layout)
        nodes_ok = all(n["up"] and n["serving"] for n in status["nodes"])
        writer_ok = status["exit_code"] == Health.WRITABLE
        readers_ok = len(status["readers"]) == len(READER_NAMES) and all(
            r["up"] and r["epoch"] for r in status["readers"]
        )
        if nodes_ok and writer_ok and readers_ok:
            return status
        await asyncio.sleep(0.2)
    raise SixfoldError(
        f"cluster not healthy after {timeout_s:g} s; see logs in {layout.directory}/logs"
    )
