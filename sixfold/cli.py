"""The `sixfold` command: run a local cluster, watch it, kill parts of it, read and write pages."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from sixfold import cluster, targets
from sixfold.clients import ReaderClient, WriterClient
from sixfold.errors import SixfoldError
from sixfold.page import until_nul
from sixfold.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb

HEALTHY_TIMEOUT_S = 60.0


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir)


def cmd_up(args: argparse.Namespace) -> int:
    directory = _dir(args)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        layout = cluster.ClusterLayout.load(directory)
    except SixfoldError:
        layout = cluster.new_layout(directory)
    running = [n for n, p in layout.processes.items() if cluster.is_running(p)]
    if running:
        raise SixfoldError(
            f"a cluster is already running in {directory} ({', '.join(running)}); "
            "`sixfold status` shows it, `sixfold down` stops it"
        )
    node_names = [n for n, p in layout.processes.items() if p.role == "node"]
    cluster.start_processes(layout, node_names)
    cluster.start_processes(layout, [cluster.WRITER_NAME, *cluster.READER_NAMES])
    print(f"starting sixfold in {directory.resolve()} ...", flush=True)
    try:
        status = asyncio.run(cluster.wait_healthy(layout, args.timeout))
    except SixfoldError:
        cluster.stop_all(layout)
        raise
    print_status(status, layout)
    if args.detach:
        print("cluster is up; `sixfold down` stops it")
        return 0
    print("cluster is up; Ctrl-C stops it")
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    while not stop["now"]:
        time.sleep(0.2)
    stopped = cluster.stop_all(cluster.ClusterLayout.load(directory))
    print(f"stopped {len(stopped)} processes")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    layout = cluster.ClusterLayout.load(_dir(args))
    stopped = cluster.stop_all(layout)
    print(f"stopped {', '.join(stopped) if stopped else 'nothing (no process was running)'}")
    return 0


def _target(args: argparse.Namespace) -> targets.ProcessTarget | targets.ComposeTarget:
    return targets.load_target(_dir(args), args.compose)


def cmd_status(args: argparse.Namespace) -> int:
    target = _target(args)
    status = asyncio.run(cluster.gather_status(target))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print_status(status, target)
    return 0


def print_status(status: dict, target: cluster.Endpoints) -> None:
    def show(value: object) -> str:
        return "-" if value is None else str(value)

    print(f"{'node':<6}{'az':<4}{'up':<6}{'scl':>10}{'epoch':>7}  address")
    for n in status["nodes"]:
        address = target.nodes[n["name"]]
        up = "up" if n["up"] else "DOWN"
        print(
            f"{n['name']:<6}{n['az']:<4}{up:<6}{show(n['scl']):>10}{show(n['epoch']):>7}  {address}"
        )
    w = status["writer"]
    up = "up" if w["up"] else "DOWN"
    print(
        f"writer  {up}  vdl {show(w['vdl'])}  epoch {show(w['epoch'])}  {w['status'] if w['up'] else ''}"
    )
    for r in status["readers"]:
        up = "up" if r["up"] else "DOWN"
        print(f"reader {r['name']}  {up}  read point {show(r['read_point'])}")
    n_up = status["nodes_up"]
    print(
        f"write quorum: {'available' if status['write_quorum'] else 'UNAVAILABLE'} "
        f"({n_up} of 6 nodes up, 4 needed); read quorum: "
        f"{'available' if status['read_quorum'] else 'UNAVAILABLE'} (3 needed)"
    )


def cmd_kill(args: argparse.Namespace) -> int:
    target = _target(args)
    names = cluster.resolve_names(args.names, args.az)
    killed = target.kill(names)
    not_running = [n for n in names if n not in killed]
    if killed:
        print(f"killed (SIGKILL) {', '.join(killed)}")
    if not_running:
        print(f"not running: {', '.join(not_running)}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    target = _target(args)
    names = cluster.resolve_names(args.names, args.az)
    started = target.start(names)
    already = [n for n in names if n not in started]
    line = f"started {', '.join(started) if started else 'nothing'}"
    print(line + (f"; already running: {', '.join(already)}" if already else ""))
    return 0


def cmd_page_write(args: argparse.Namespace) -> int:
    target = _target(args)
    data = args.text.encode("utf-8")
    if len(data) > PAGE_SIZE_BYTES:
        raise SixfoldError(f"text of {len(data)} bytes does not fit a {PAGE_SIZE_BYTES}-byte page")

    async def write() -> int:
        client = WriterClient(target.writer_address)
        try:
            change = pb.PageChange(page_no=args.page, offset=0, data=data + b"\x00")
            return await client.write_pages([change], timeout=args.timeout)
        finally:
            await client.close()

    print(asyncio.run(write()))
    return 0


def cmd_page_read(args: argparse.Namespace) -> int:
    target = _target(args)

    async def read() -> pb.ReadPageResponse:
        if args.reader:
            client = ReaderClient(target.reader_address(args.reader), args.reader)
        else:
            client = WriterClient(target.writer_address)
        try:
            return await client.read_page(args.page, timeout=args.timeout)
        finally:
            await client.close()

    response = asyncio.run(read())
    print(until_nul(response.image).decode("utf-8", errors="replace"))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from sixfold.chaos import run_chaos

    return run_chaos(_target(args), args)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from sixfold.fuzz import main as fuzz_main

    return fuzz_main(_target(args), args, _dir(args))


def cmd_bench(args: argparse.Namespace) -> int:
    from sixfold.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sixfold",
        description="A quorum storage engine on Aurora's design: 6 storage nodes in 3 AZs, a writer, readers.",
    )
    parser.add_argument(
        "--dir", default=os.environ.get("SIXFOLD_DIR", str(cluster.DEFAULT_DIR)),
        help="cluster directory (default $SIXFOLD_DIR or ./.sixfold)",
    )  # fmt: skip
    parser.add_argument(
        "--compose", action="store_true",
        help="talk to the docker compose cluster (ports from docker-compose.yml) instead of "
        "the process cluster in --dir; also SIXFOLD_COMPOSE=1",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start a local cluster: 6 storage nodes, a writer, 2 readers")
    p.add_argument("--detach", action="store_true", help="return once the cluster is healthy")
    p.add_argument(
        "--timeout", type=float, default=HEALTHY_TIMEOUT_S, help="seconds to wait for health"
    )
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("down", help="stop the local cluster")
    p.set_defaults(fn=cmd_down)

    p = sub.add_parser("status", help="nodes, writer, readers and quorum availability")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_status)

    for name, fn, verb in (("kill", cmd_kill, "SIGKILL"), ("start", cmd_start, "restart")):
        p = sub.add_parser(
            name, help=f"{verb} processes by name (a1 ... c2, writer, r1, r2) or a whole AZ"
        )
        p.add_argument("names", nargs="*", help="process names")
        p.add_argument("--az", choices=("a", "b", "c"), help="every storage node of this AZ")
        p.set_defaults(fn=fn)

    page = sub.add_parser("page", help="write or read a page")
    page_sub = page.add_subparsers(dest="page_command", required=True, metavar="ACTION")
    p = page_sub.add_parser("write", help="write TEXT at offset 0 of page N; prints the commit LSN")
    p.add_argument("page", type=int, help="page number")
    p.add_argument("text", help="UTF-8 text")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait (default %(default)s)"
    )
    p.set_defaults(fn=cmd_page_write)
    p = page_sub.add_parser("read", help="print page N up to its first NUL byte")
    p.add_argument("page", type=int, help="page number")
    p.add_argument("--reader", help="read through this reader (r1, r2) instead of the writer")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait (default %(default)s)"
    )
    p.set_defaults(fn=cmd_page_read)

    p = sub.add_parser(
        "chaos", help="kill an AZ, then one more node, under a write load; restart; count losses"
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds to watch each step")
    p.add_argument("--limit", type=float, default=60.0, help="seconds any step may wait at most")
    p.set_defaults(fn=cmd_chaos)

    p = sub.add_parser(
        "fuzz", help="a register workload under injected faults, checked for linearizability"
    )
    from sixfold.fuzz import add_arguments as add_fuzz_arguments

    add_fuzz_arguments(p)
    p.set_defaults(fn=cmd_fuzz)

    p = sub.add_parser("bench", help="commit throughput and latency on a fresh local cluster")
    from sixfold.bench import add_arguments

    add_arguments(p)
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SixfoldError as exc:
        print(f"sixfold: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
