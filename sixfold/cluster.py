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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from sixfold.clients import NodeClient, ReaderClient, WriterClient
from sixfold.errors import SixfoldError
from sixfold.quorum import AZS, NODE_AZ, NODE_NAMES, nodes_in_az
from sixfold.rpc import sixfold_pb2 as pb

DEFAULT_DIR = Path(".sixfold")
READER_NAMES = ("r1", "r2")
WRITER_NAME = "writer"
INSTANCE_NAMES = (WRITER_NAME, *READER_NAMES)  # any of them may be the writer (issue 6)
INTERPOSER_NAME = "interposer"  # only in a partitionable cluster (`sixfold up --partitionable`)
HOST = "127.0.0.1"
STOP_GRACE_S = 5.0


@dataclass
class ProcessInfo:
    name: str
    role: str  # "node", "writer", "reader" or "interposer"
    port: int
    pid: int = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass
class ClusterLayout:
    directory: str
    processes: dict[str, ProcessInfo] = field(default_factory=dict)
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    # Partitionable clusters only: "src>dst" -> the interposer's port for that directed link.
    links: dict[str, int] = field(default_factory=dict)

    @property
    def partitionable(self) -> bool:
        return bool(self.links)

    @property
    def nodes(self) -> dict[str, str]:
        """Where clients reach the nodes: always direct, never through the interposer."""
        return {n: self.processes[n].address for n in NODE_NAMES}

    def node_address_for(self, src: str, node: str) -> str:
        """The address `src` uses to reach `node`: through the interposer when partitionable."""
        if not self.links:
            return self.processes[node].address
        return f"{HOST}:{self.links[link_key(src, node)]}"

    @property
    def writer_address(self) -> str:
        """The current writer: asked of the instances, since a reader may have taken over;
        the instance started as the writer when none answers."""
        from sixfold.discovery import current_writer_address

        seeds = [self.processes[n].address for n in INSTANCE_NAMES]
        return current_writer_address(seeds, fallback=self.processes[WRITER_NAME].address)

    def reader_address(self, name: str) -> str:
        if name not in READER_NAMES:
            raise SixfoldError(
                f"unknown reader {name!r}: the readers are {', '.join(READER_NAMES)}"
            )
        return self.processes[name].address

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
            raise SixfoldError(
                f"no cluster in {directory}: start one with `sixfold up --dir {directory}`"
            )
        raw = json.loads(path.read_text())
        layout = cls(
            raw["directory"], extra_args=raw.get("extra_args", {}), links=raw.get("links", {})
        )
        layout.processes = {k: ProcessInfo(**v) for k, v in raw["processes"].items()}
        return layout


def instance_address_in(processes: dict[str, ProcessInfo], name: str) -> str:
    if name not in INSTANCE_NAMES:
        raise SixfoldError(
            f"unknown instance {name!r}: the instances are {', '.join(INSTANCE_NAMES)}"
        )
    return processes[name].address


# Ports are picked when the layout is made and bound later, when each process starts. Picked
# from below Linux's ephemeral range (32768-60999 by default), no outgoing connection's source
# port can take one in between, as happened with ports the kernel handed out.
PORT_RANGE = (20_000, 32_000)
PORT_TRIES_MAX = 200
_handed_out: set[int] = set()  # ports this process picked: never twice


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range."""
    rng = random.Random()
    for _ in range(PORT_TRIES_MAX):
        port = rng.randrange(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise SixfoldError(
        f"no free port on {HOST} in {PORT_RANGE[0]}-{PORT_RANGE[1]} after {PORT_TRIES_MAX} tries"
    )


def link_key(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def new_layout(directory: Path, partitionable: bool = False) -> ClusterLayout:
    layout = ClusterLayout(str(directory.resolve()))
    for name in NODE_NAMES:
        layout.processes[name] = ProcessInfo(name, "node", free_port())
    layout.processes[WRITER_NAME] = ProcessInfo(WRITER_NAME, "writer", free_port())
    for name in READER_NAMES:
        layout.processes[name] = ProcessInfo(name, "reader", free_port())
    if partitionable:
        make_partitionable(layout)
    return layout


def make_partitionable(layout: ClusterLayout) -> None:
    """Route every member-to-node link through an interposer (sixfold/interposer.py).

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
        return [sys.executable, "-m", "sixfold.interposer", "--dir", str(directory),
                "--port", str(info.port)]  # fmt: skip
    nodes = ",".join(f"{n}={layout.node_address_for(name, n)}" for n in NODE_NAMES if n != name)
    if info.role == "node":
        cmd = [sys.executable, "-m", "storage_node", "--name", name, "--data-dir",
               str(directory / name), "--port", str(info.port), "--peers", nodes]  # fmt: skip
    elif info.role == "writer":
        cmd = [sys.executable, "-m", "writer", "--nodes", nodes, "--port", str(info.port)]
    else:
        # r1 takes over a dead writer first, r2 half a second later if r1 did not.
        rank = READER_NAMES.index(name) if name in READER_NAMES else len(READER_NAMES)
        cmd = [sys.executable, "-m", "reader", "--name", name, "--nodes", nodes,
               "--port", str(info.port), "--promotion-rank", str(rank)]  # fmt: skip
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
    with open(logs / f"{name}.log", "ab") as log_file:
        proc = subprocess.Popen(
            command_for(layout, name), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
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
    known = (*NODE_NAMES, WRITER_NAME, *READER_NAMES)
    for n in chosen:
        if n not in known:
            raise SixfoldError(f"unknown process {n!r}: expected one of {', '.join(known)}")
    if not chosen:
        raise SixfoldError("name at least one process, or an AZ with --az")
    return list(dict.fromkeys(chosen))


def start_processes(layout: ClusterLayout, names: list[str]) -> None:
    layout.save()  # the interposer reads its links from cluster.json as it starts
    # The interposer first: every link of a partitionable cluster goes through it.
    for name in sorted(names, key=lambda n: n != INTERPOSER_NAME):
        spawn(layout, name)
    layout.save()


def kill_processes(layout: ClusterLayout, names: list[str], sig: int = signal.SIGKILL) -> list[str]:
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
    stopped = kill_processes(layout, list(layout.processes), signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(is_running(layout.processes[n]) for n in stopped):
        time.sleep(0.05)
    kill_processes(layout, stopped, signal.SIGKILL)
    for info in layout.processes.values():
        info.pid = 0
    layout.save()
    return stopped


# -- status ---------------------------------------------------------------------------------------


class Endpoints(Protocol):
    """Where a cluster's members answer: the process cluster and the compose one alike."""

    @property
    def nodes(self) -> dict[str, str]: ...

    @property
    def writer_address(self) -> str: ...

    def reader_address(self, name: str) -> str: ...


async def gather_status(layout: Endpoints) -> dict:
    """What every process says of itself; unreachable ones are marked down."""
    from sixfold.quorum import READ_QUORUM, WRITE_QUORUM

    nodes = [NodeClient(n, a) for n, a in layout.nodes.items()]
    writer_address = layout.writer_address  # a topology lookup: once
    writer = WriterClient(writer_address)
    readers = [ReaderClient(layout.reader_address(r), r) for r in READER_NAMES]
    try:
        results = await asyncio.gather(
            *(c.get_state(timeout=1.0) for c in nodes), writer.state(timeout=1.0),
            *(r.state(timeout=1.0) for r in readers), return_exceptions=True,
        )  # fmt: skip
    finally:
        for c in [*nodes, writer, *readers]:
            await c.close()
    node_results, writer_result, reader_results = results[:6], results[6], results[7:]
    out_nodes = []
    for name, r in zip(NODE_NAMES, node_results, strict=True):
        up = not isinstance(r, BaseException)
        out_nodes.append({
            "name": name, "az": NODE_AZ[name], "up": up,
            "scl": r.scl if up else None, "epoch": r.epoch if up else None,
            "vdl": r.vdl if up else None, "serving": r.serving if up else False,
            "records": r.records_stored if up else None,
        })  # fmt: skip
    up_count = sum(1 for n in out_nodes if n["up"])
    w_up = not isinstance(writer_result, BaseException)
    writer_info = {
        "name": await _writer_name(writer_address) if w_up else None,
        "up": w_up,
        "vdl": writer_result.vdl if w_up else None,
        "epoch": writer_result.epoch if w_up else None,
        "status": writer_result.status if w_up else str(writer_result),
        "fenced": writer_result.fenced if w_up else False,
    }
    reader_info = []
    for name, r in zip(READER_NAMES, reader_results, strict=True):
        up = not isinstance(r, BaseException)
        reader_info.append({
            "name": name, "up": up, "read_point": r.read_point if up else None,
            "epoch": r.epoch if up else None,
        })  # fmt: skip
    return {
        "nodes": out_nodes,
        "writer": writer_info,
        "readers": reader_info,
        "write_quorum": up_count >= WRITE_QUORUM,
        "read_quorum": up_count >= READ_QUORUM,
        "nodes_up": up_count,
    }


async def _writer_name(address: str) -> str | None:
    """Which instance answers at the writer's address (a reader may have taken over)."""
    import grpc

    from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            answer = await pb_grpc.TopologyServiceStub(channel).GetTopology(
                pb.GetTopologyRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return None
    return answer.answered_by


async def wait_healthy(layout: ClusterLayout, timeout_s: float) -> dict:
    """Wait until all nodes serve, the writer has recovered and readers have a read point."""
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = await gather_status(layout)
        nodes_ok = all(n["up"] and n["serving"] for n in status["nodes"])
        writer_ok = status["writer"]["up"] and status["writer"]["status"] == "accepting writes"
        readers_ok = all(r["up"] and r["epoch"] for r in status["readers"])
        if nodes_ok and writer_ok and readers_ok:
            return status
        await asyncio.sleep(0.2)
    raise SixfoldError(
        f"cluster not healthy after {timeout_s:g} s; see logs in {layout.directory}/logs"
    )
