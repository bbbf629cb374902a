"""The `sixfold` command: run a local cluster, watch it, kill parts of it, read and write pages."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster, targets, tls
from sixfold.auth import TokenFile
from sixfold.clients import NodeDownError, ReaderClient, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.page import until_nul
from sixfold.core.quorum import AZS, COPIES, NODE_NAMES, READ_QUORUM, SPARE_NAMES
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.events import History
from sixfold.tools.status import Health, gather_status
from sixfold.tools.status import render as render_status
from sixfold.tools.waiting import write_notice

HEALTHY_TIMEOUT_S = 60.0


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir)


def _cli(args: argparse.Namespace) -> str:
    """The command a user types for this cluster: `sixfold`, with --dir when not the default."""
    default = os.environ.get("SIXFOLD_DIR", str(cluster.DEFAULT_DIR))
    return "sixfold" if args.dir == default else f"sixfold --dir {args.dir}"


def cmd_up(args: argparse.Namespace) -> int:
    directory = _dir(args)
    if args.replica_of or _is_region(directory):
        return _up_region(args, directory)
    directory.mkdir(parents=True, exist_ok=True)
    if args.base_port is not None:
        cluster.check_base_port(args.base_port)
    try:
        layout = cluster.ClusterLayout.load(directory)
    except SixfoldError:
        layout = cluster.new_layout(
            directory, base_port=args.base_port or cluster.BASE_PORT_DEFAULT
        )
    if args.region and args.region != layout.region:
        if layout.regions and args.region in layout.regions:
            raise SixfoldError(f"a secondary region is already named {args.region!r}")
        layout.region = args.region
    running = [n for n, p in layout.processes.items() if cluster.is_running(p)]
    if running:
        raise SixfoldError(
            f"a cluster is already running in {directory} ({', '.join(running)}); "
            f"`{_cli(args)} status` shows it, `{_cli(args)} down` stops it"
        )
    if args.base_port is not None and layout.processes[cluster.WRITER_NAME].port != args.base_port:
        cluster.set_ports(layout, args.base_port)  # the data stays; every process moves
    cluster.ensure_metrics_ports(layout)
    cluster.check_ports_free(layout)
    if args.spares:
        cluster.add_spares(layout)  # kept in cluster.json, as the nodes are
    if args.partitionable:
        cluster.make_partitionable(layout)  # kept in cluster.json: restarts stay partitionable
    if args.tls or layout.tls:
        written = cluster.enable_tls(layout)  # kept in cluster.json, as the certificates are
        if written:
            print(f"TLS: a CA and certificates in {layout.tls_dir} ({len(written)} files)")
    if args.auth or layout.auth:
        if cluster.enable_auth(layout):
            print(
                f"auth: callers need a token; the operator's (admin) is in "
                f"{layout.auth_dir / cluster.OPERATOR_TOKEN_FILE}, which this CLI uses; "
                f"`{_cli(args)} auth add NAME --role read|write|admin` makes more"
            )
        cluster.use_tls(layout)  # this CLI's own calls carry the operator's token
    if layout.partitionable:
        from sixfold.tools.interposer import write_cuts

        write_cuts(Path(layout.directory), 0, [])  # a fresh `up` starts with no partition
    node_names = [n for n, p in layout.processes.items() if p.role in ("node", "interposer")]
    cluster.start_processes(layout, node_names)
    cluster.start_processes(layout, [cluster.WRITER_NAME, *cluster.READER_NAMES])
    print(f"starting sixfold in {directory.resolve()} ...", flush=True)
    try:
        status = asyncio.run(cluster.wait_healthy(layout, args.timeout))
    except SixfoldError:
        cluster.stop_all(layout)
        raise
    print(render_status(status))
    if args.detach:
        print(f"cluster is up; `{_cli(args)} down` stops it")
        return 0
    print("cluster is up; Ctrl-C stops it. Cluster events follow as they happen.", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    _tell_events(layout, lambda: stop["now"])
    stopped = cluster.stop_all(cluster.ClusterLayout.load(directory))
    print(f"stopped {len(stopped)} processes")
    return 0


def _is_region(directory: Path) -> bool:
    try:
        return bool(cluster.ClusterLayout.load(directory).replica_of)
    except SixfoldError:
        return False


def _up_region(args: argparse.Namespace, directory: Path) -> int:
    """A secondary region (issue 16): created and seeded from the primary, or started again."""
    from sixfold.tools import regions

    if _is_region(directory):
        layout = cluster.ClusterLayout.load(directory)
        if args.replica_of and Path(args.replica_of).resolve() != Path(layout.replica_of):
            raise SixfoldError(
                f"{directory} is region {layout.region} of {layout.replica_of}, not of "
                f"{args.replica_of}"
            )
        running = [n for n, p in layout.processes.items() if cluster.is_running(p)]
        if running:
            raise SixfoldError(f"region {layout.region} is already running in {directory}")
        from sixfold.tools.promotion import rejoin

        seeded = rejoin(directory, args.timeout)
        again = f"seeded again as of LSN {seeded} (its data set aside: it was failed over from)"
        print(
            f"region {layout.region} is up in {directory}, replicating from "
            f"{layout.replica_of}" + (f"; {again}" if seeded else "")
        )
    else:
        if not args.region:
            raise SixfoldError("--replica-of needs --region NAME: the new region's name")
        seeded = regions.add_region(
            Path(args.replica_of), args.region, directory, args.base_port, args.timeout
        )
        print(
            f"region {args.region} is up in {directory}: seeded with {seeded.pages:,} pages "
            f"as of LSN {seeded.lsn}, replicating from {args.replica_of}"
        )
    print(render_global_status_of(Path(cluster.ClusterLayout.load(directory).replica_of)))
    if not args.detach:
        print(
            "the region runs in the background; `sixfold --dir PRIMARY global remove-region "
            "NAME` stops it"
        )
    return 0


def render_global_status_of(primary_dir: Path) -> str:
    from sixfold.tools import regions

    return regions.render_global_status(regions.global_status(primary_dir))


def cmd_global_add(args: argparse.Namespace) -> int:
    from sixfold.tools import regions

    into = Path(args.into) if args.into else _dir(args).resolve().parent / f"region-{args.name}"
    seeded = regions.add_region(_dir(args), args.name, into, args.base_port, args.timeout)
    print(
        f"region {args.name} is up in {into}: seeded with {seeded.pages:,} pages as of LSN "
        f"{seeded.lsn}"
    )
    print(render_global_status_of(_dir(args)))
    return 0


def cmd_global_remove(args: argparse.Namespace) -> int:
    from sixfold.tools import regions

    directory = regions.remove_region(_dir(args), args.name)
    print(f"region {args.name} stopped and removed; its data stays in {directory}")
    return 0


def cmd_global_switchover(args: argparse.Namespace) -> int:
    from sixfold.tools.promotion import switchover

    p = switchover(_dir(args), args.region)
    print(
        f"region {p.region} is the primary: epoch {p.epoch}, VDL {p.vdl} (nothing "
        f"acknowledged was lost); writes paused {p.pause_s:.2f} s. {args.dir} is a secondary now"
    )
    return 0


def cmd_global_failover(args: argparse.Namespace) -> int:
    from sixfold.tools.promotion import failover

    p = failover(_dir(args), args.region)
    lost = (
        "unknown (the agent left no status)"
        if p.lost_lsns is None
        else f"{p.lost_lsns} LSNs, {p.lost_s:.2f} s of commits (as the agent last saw the primary)"
    )
    print(
        f"region {p.region} is the primary: epoch {p.epoch}, VDL {p.vdl}, writing "
        f"{p.pause_s:.2f} s after the failover began. RPO: {lost}. {args.dir} is fenced: "
        f"`sixfold --dir {args.dir} up` sets its data aside and rejoins it as a secondary"
    )
    return 0


def cmd_global_status(args: argparse.Namespace) -> int:
    from sixfold.tools import regions

    status = regions.global_status(_dir(args))
    print(json.dumps(status, indent=2) if args.json else regions.render_global_status(status))
    return 0


EVENTS_POLL_S = 1.0


def _tell_events(target: cluster.Endpoints, stopped: Callable[[], bool]) -> None:
    """Print cluster events (a node lost or back, a quorum lost or regained, a new writer)
    with the time, until `stopped()`."""
    history = History()
    next_poll = 0.0
    while not stopped():
        if time.monotonic() >= next_poll:
            for event in history.update(asyncio.run(gather_status(target)), time.monotonic()):
                print(event, flush=True)
            next_poll = time.monotonic() + EVENTS_POLL_S
        time.sleep(0.1)


def cmd_down(args: argparse.Namespace) -> int:
    layout = cluster.ClusterLayout.load(_dir(args))
    stopped = cluster.stop_all(layout)
    print(f"stopped {', '.join(stopped) if stopped else 'nothing (no process was running)'}")
    return 0


def _target(args: argparse.Namespace) -> targets.ProcessTarget | targets.ComposeTarget:
    return targets.load_target(_dir(args), args.compose)


def _running_target(args: argparse.Namespace) -> targets.ProcessTarget | targets.ComposeTarget:
    """The cluster to talk to, refused with a hint when none of its processes runs."""
    target = _target(args)
    if isinstance(target, targets.ProcessTarget) and not target.running():
        raise SixfoldError(
            f"no cluster is running in {args.dir}: `{_cli(args)} up` starts it "
            "(--compose talks to the docker compose cluster)"
        )
    return target


def cmd_status(args: argparse.Namespace) -> int:
    try:
        target = _target(args)
    except cluster.NoClusterError as exc:
        print(f"sixfold: {exc}", file=sys.stderr)
        return Health.NO_CLUSTER
    if _is_region(_dir(args)):  # no writer here: the regions' view, from the primary's
        from sixfold.tools import regions

        layout = cluster.ClusterLayout.load(_dir(args))
        status = regions.global_status(Path(layout.replica_of))
        print(json.dumps(status, indent=2) if args.json else regions.render_global_status(status))
        return 0
    status = asyncio.run(gather_status(target))
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    if isinstance(target, targets.ProcessTarget) and not target.running():
        print(f"nothing is running in {args.dir}: `{_cli(args)} up` starts it", file=sys.stderr)
    return status["exit_code"]


def cmd_watch(args: argparse.Namespace) -> int:
    from sixfold.tools.watch import run_watch

    return run_watch(_target(args), args.seconds)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sixfold.tools.dashboard import run_dashboard

    return run_dashboard(_target(args), args.port, args.seconds)


def cmd_logs(args: argparse.Namespace) -> int:
    from sixfold.tools import logs

    known = (*cluster.ALL_NAMES, *SPARE_NAMES)
    names = [args.name] if args.name else list(cluster.ALL_NAMES)
    if args.name and args.name not in known:
        raise SixfoldError(f"unknown process {args.name!r}: expected one of {', '.join(known)}")
    if targets.use_compose(args.compose):
        containers = {n: targets.container_name(n) for n in names}
        return 0 if logs.container_logs(containers, args.lines, args.follow) else 1
    else:
        layout = cluster.ClusterLayout.load(_dir(args))
        logs.process_logs(Path(layout.directory), names, args.lines, args.follow)
    return 0


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


PAGE_NO_LIMIT = (
    1 << 32
)  # the page API's pages; the SQL database's start here (sixfold/sql/layout.py)
PAGE_TEXT_BYTES_MAX = PAGE_SIZE_BYTES - 1  # the text and its NUL terminator fill a page


def _check_page_no(page_no: int) -> None:
    if not 0 <= page_no < PAGE_NO_LIMIT:
        raise SixfoldError(
            f"page {page_no}: page numbers run from 0 to {PAGE_NO_LIMIT - 1} (the SQL "
            "database's pages, from 2^32 up, are read and written through `sixfold sql`)"
        )


def cmd_page_write(args: argparse.Namespace) -> int:
    _check_page_no(args.page)
    data = args.text.encode("utf-8")
    if len(data) > PAGE_TEXT_BYTES_MAX:
        raise SixfoldError(
            f"text of {len(data)} bytes is too long: a page holds at most "
            f"{PAGE_TEXT_BYTES_MAX} bytes of text (and a NUL byte after it)"
        )
    address = _running_target(args).find_writer_address()

    async def write() -> int:
        client = WriterClient(address)
        try:
            change = pb.PageChange(page_no=args.page, offset=0, data=data + b"\x00")
            return await client.write_pages([change], timeout=args.timeout)
        finally:
            await client.close()

    with write_notice(address, args.timeout):
        lsn = asyncio.run(write())
    print(lsn)
    return 0


def cmd_page_read(args: argparse.Namespace) -> int:
    _check_page_no(args.page)
    target = _running_target(args)

    async def read() -> pb.ReadPageResponse:
        if args.reader:
            client = ReaderClient(target.reader_address(args.reader), args.reader)
        else:
            client = WriterClient(target.find_writer_address())
        try:
            return await client.read_page(args.page, timeout=args.timeout)
        finally:
            await client.close()

    response = asyncio.run(read())
    if not response.page_lsn:
        raise SixfoldError(f"page {args.page} has never been written")
    print(until_nul(response.image).decode("utf-8", errors="replace"))
    return 0


def _sql_address(args: argparse.Namespace) -> tuple[str, str]:
    """The address and a label of the writer, or of the reader named by --reader."""
    target = _running_target(args)
    if args.reader:
        return target.reader_address(args.reader), f"reader {args.reader}"
    return target.find_writer_address(), "the writer"


def cmd_sql(args: argparse.Namespace) -> int:
    from sixfold.tools.shell import run_sql

    if not args.sql.strip():
        raise SixfoldError('no SQL given: sixfold sql "SELECT ..."')
    address, _ = _sql_address(args)
    if args.reader:
        return run_sql(address, args.sql, args.timeout, args.json)
    notice = functools.partial(write_notice, address, args.timeout)
    return run_sql(address, args.sql, args.timeout, args.json, waiting=notice)


def cmd_shell(args: argparse.Namespace) -> int:
    from sixfold.tools.shell import run_shell

    address, label = _sql_address(args)
    return run_shell(address, label, args.timeout)


def cmd_replace(args: argparse.Namespace) -> int:
    """Replace storage node OLD with spare NEW (issue 14)."""
    from sixfold.tools import membership

    target = _running_target(args)
    started = time.monotonic()
    response = asyncio.run(
        membership.begin(target.find_writer_address(), args.old, args.new, args.force)
    )
    m = response.membership
    print(
        f"membership epoch {m.epoch}: replacing {m.change_old} with {m.change_new} at position "
        f"{m.change_position}; writes need 4 of 6 of both sets until {m.change_new} is complete "
        f"to LSN {response.durable_point}"
    )
    if args.no_wait:
        return 0
    print(asyncio.run(membership.follow(target, args.new, started, args.timeout)))
    return 0


def cmd_spares(args: argparse.Namespace) -> int:
    from sixfold.tools import membership

    print(asyncio.run(membership.spares(_running_target(args))))
    return 0


def _token_file(args: argparse.Namespace) -> TokenFile:
    if args.file is not None:  # a swarm's or a Kubernetes deployment's, given as a secret
        return TokenFile(args.file)
    layout = cluster.ClusterLayout.load(_dir(args))
    if not layout.auth:
        raise SixfoldError(
            f"the cluster in {_dir(args)} asks for no tokens: start it with `up --tls --auth`"
        )
    return TokenFile(layout.auth_dir / cluster.TOKENS_FILE)


def cmd_auth_add(args: argparse.Namespace) -> int:
    print(_token_file(args).add(args.name, args.role))
    return 0


def cmd_auth_list(args: argparse.Namespace) -> int:
    for t in _token_file(args).load():
        made = datetime.datetime.fromtimestamp(t.created_at).isoformat(timespec="seconds")
        print(f"{t.name:20s} {t.role:6s} made {made}")
    return 0


def cmd_auth_remove(args: argparse.Namespace) -> int:
    _token_file(args).remove(args.name)
    print(f"token {args.name} removed: refused from now on")
    return 0


def cmd_certs_init(args: argparse.Namespace) -> int:
    from sixfold import tls

    names = [n for n in args.names.split(",") if n]
    if not names or args.days <= 0:
        raise SixfoldError("give --names NAME,... and --days above 0")
    hosts = [h for h in args.hosts.split(",") if h]
    written = tls.init_certs(args.directory, names, hosts, args.days)
    print(f"{args.directory}: {', '.join(written)}")
    print(f"members use them with SIXFOLD_TLS_DIR={args.directory} SIXFOLD_TLS_NAME=<member>")
    return 0


def cmd_backup_run(args: argparse.Namespace) -> int:
    """Ship the committed log to an object store (issue 15)."""
    from sixfold.tools import backup

    target = _running_target(args)
    retention_s = backup.parse_retention(args.retention) if args.retention else 0.0
    base_every_s = backup.parse_duration(args.base_every)
    if not base_every_s > 0:
        raise SixfoldError(f"--base-every {args.base_every!r}: give a duration such as 1h")
    # Stopped by SIGTERM (docker stop, systemd) as by Ctrl-C: the agent lets go of its lease.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        asyncio.run(
            backup.run(
                target,
                args.to,
                args.interval,
                args.rounds,
                retention_s,
                base_every_s,
                args.metrics_port,
            )
        )
    except KeyboardInterrupt:
        print("backup stopped")
    return 0


def cmd_backup_status(args: argparse.Namespace) -> int:
    from sixfold.tools import backup

    print(backup.status(args.to))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Named restore points that retention keeps (issue 15)."""
    from sixfold.tools import backup

    if args.snapshot_command == "create":
        snap = backup.snapshot_create(args.backup, args.name)
        print(f"snapshot {snap.name}: LSN {snap.lsn} ({backup.when(snap.durable_at)})")
    elif args.snapshot_command == "list":
        for snap in backup.snapshots(args.backup):
            print(f"{snap.name}  LSN {snap.lsn}  {backup.when(snap.durable_at)}")
    elif args.snapshot_command == "delete":
        backup.snapshot_delete(args.backup, args.name)
        print(f"snapshot {args.name} deleted (retention may now remove what only it kept)")
    else:
        restored = backup.snapshot_restore(args.backup, args.name, Path(args.into))
        print(
            f"restored {restored.pages:,} pages into {restored.directory} as of LSN "
            f"{restored.lsn}; start it with `sixfold --dir {restored.directory} up`"
        )
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    """Copy-on-write clones of a process cluster's volume (issue 15)."""
    from sixfold.tools import clone

    if args.into:
        if args.compose:
            raise SixfoldError(
                "clones share the source's storage files, so they are made of a process "
                "cluster (`sixfold up`), on its host"
            )
        made = asyncio.run(clone.create(_dir(args), Path(args.into), args.id))
        print(
            f"clone {made.clone_id} in {made.directory}: the volume as of LSN {made.point}, "
            f"made in {made.took_s:.2f} s, sharing every page with {_dir(args)}; start it with "
            f"`sixfold --dir {made.directory} up`"
        )
    elif args.list:
        held = clone.holds(_dir(args))
        for clone_id, points in sorted(held.items()):
            print(f"{clone_id}  LSN {max(points.values())}  held by {', '.join(sorted(points))}")
        if not held:
            print("no clone shares this volume")
    elif args.drop:
        print(clone.drop(Path(args.drop)))
    else:
        print(clone.release(_dir(args), args.release))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """A new cluster in --into holding the volume as of a point in the backup (issue 15)."""
    from sixfold.tools import backup

    to_time = backup.parse_time(args.to_time) if args.to_time is not None else None
    if args.compose:
        if args.into or not args.replace:
            raise SixfoldError(
                "on compose, a restore replaces the compose cluster's volume (every node's "
                "data): pass --replace, and no --into"
            )
        restored, commit = backup.restore_onto_compose(args.source, args.to_lsn, to_time)
        print(
            f"restored {restored.pages:,} pages into the compose cluster's volumes as of LSN "
            f"{restored.lsn}, {commit}; its members "
            "are starting: `sixfold --compose status`"
        )
        return 0
    if not args.into:
        raise SixfoldError("--into DIR: the new cluster's directory (new or empty)")
    restored = backup.restore_into(args.source, Path(args.into), args.to_lsn, to_time)
    print(
        f"restored {restored.pages:,} pages into {restored.directory} as of LSN {restored.lsn} "
        f"({backup.committed(restored)}); start it with "
        f"`sixfold --dir {restored.directory} up`"
    )
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    """Move the writer role to instance NAME with nothing acknowledged lost (issue 6)."""
    from sixfold.clients import CHANNEL_OPTIONS, call
    from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

    target = _running_target(args)
    address = target.instance_address(args.name)
    try:
        writer = targets.current_writer_name(target)
    except SixfoldError:
        writer = ""  # none answers: the promotion says why, if it cannot go ahead
    if writer == args.name:
        raise SixfoldError(f"{args.name} is already the writer: nothing changed")

    async def promote() -> pb.PromoteResponse:

        channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
        try:
            stub = pb_grpc.InstanceStub(channel)
            return await call(
                args.name, stub.Promote, pb.PromoteRequest(planned=True), args.timeout
            )
        finally:
            await channel.close()

    try:
        response = asyncio.run(promote())
    except NodeDownError as exc:
        raise SixfoldError(
            f"{args.name} did not answer at {address} ({exc}). If it is not running, start it "
            f"first (`{_cli(args)} start {args.name}`); if it is, the switchover's outcome is "
            f"unknown: `{_cli(args)} status` shows which instance is the writer"
        ) from None
    print(
        f"{args.name} is the writer now: epoch {response.epoch}, recovered VDL {response.vdl} "
        f"(every acknowledged commit is at or below it); writes paused "
        f"{response.writes_paused_s:.2f} s"
    )
    return 0


def cmd_bench_failover(args: argparse.Namespace) -> int:
    from sixfold.tools.failoverbench import main as failover_main

    return failover_main(_target(args), args)


def cmd_chaos(args: argparse.Namespace) -> int:
    from sixfold.tools.chaos import run_chaos

    return run_chaos(_target(args), args)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from sixfold.tools.fuzz import main as fuzz_main

    return fuzz_main(_target(args), args, _dir(args))


def cmd_soak(args: argparse.Namespace) -> int:
    from sixfold.tools.soak import main as soak_main

    return soak_main(_target(args), args, _dir(args))


def cmd_bench(args: argparse.Namespace) -> int:
    from sixfold.tools.bench import main as bench_main

    return bench_main(args)


def cmd_bench_restart(args: argparse.Namespace) -> int:
    from sixfold.tools.restartbench import main_restart

    return main_restart(args)


def cmd_bench_idle(args: argparse.Namespace) -> int:
    from sixfold.tools.restartbench import main_idle

    return main_idle(args)


def cmd_bench_hydrate(args: argparse.Namespace) -> int:
    from sixfold.tools.hydratebench import main as hydratebench_main

    return hydratebench_main(args)


def cmd_bench_transport(args: argparse.Namespace) -> int:
    from sixfold.tools.transportbench import main as transportbench_main

    return transportbench_main(args)


def cmd_bench_clone(args: argparse.Namespace) -> int:
    from sixfold.tools.clonebench import main as clonebench_main

    return clonebench_main(args)


def cmd_bench_backup(args: argparse.Namespace) -> int:
    from sixfold.tools.backupbench import main as backupbench_main

    return backupbench_main(args)


def cmd_bench_region(args: argparse.Namespace) -> int:
    from sixfold.tools.regionbench import main as regionbench_main

    return regionbench_main(args)


def cmd_bench_sql(args: argparse.Namespace) -> int:
    from sixfold.tools.sqlbench import main as sqlbench_main

    return sqlbench_main(args)


@dataclass(frozen=True)
class ToolCommand:
    """A command whose options come from its tool's module, imported only when the command
    line names it: importing every bench and the fuzzer cost each CLI call 0.35 s."""

    name: str
    help: str
    module: str
    fn: Callable[[argparse.Namespace], int]
    add_arguments: str = "add_arguments"
    description: str | None = None  # None: the module's docstring if `doc`, else the help
    doc: bool = True


TOOL_COMMANDS = (
    ToolCommand(
        "bench-failover",
        "RTO after killing the writer, and reader restart time",
        "sixfold.tools.failoverbench",
        cmd_bench_failover,
        description="Against the running cluster: kills the writer --runs times and times the "
        "first successful commit through the client after each kill; then restarts readers "
        "and times their first answered query. Checks nothing acknowledged was lost.",
    ),
    ToolCommand(
        "fuzz",
        "a register workload under injected faults, checked for linearizability",
        "sixfold.tools.fuzz",
        cmd_fuzz,
        doc=False,
    ),
    ToolCommand(
        "soak",
        "a long mixed load with restarts; fails if logs, disk or memory do not settle",
        "sixfold.tools.soak",
        cmd_soak,
    ),
    ToolCommand(
        "bench",
        "commit throughput and latency on a fresh local cluster",
        "sixfold.tools.bench",
        cmd_bench,
        doc=False,
    ),
    ToolCommand(
        "bench-restart",
        "first write and first read after a cold restart, by log size",
        "sixfold.tools.restartbench",
        cmd_bench_restart,
        "add_restart_arguments",
    ),
    ToolCommand(
        "bench-idle",
        "idle CPU of each node, by the number of pages stored",
        "sixfold.tools.restartbench",
        cmd_bench_idle,
        "add_idle_arguments",
    ),
    ToolCommand(
        "bench-hydrate",
        "how fast a node that lost its disk hydrates from peers, idle or under load",
        "sixfold.tools.hydratebench",
        cmd_bench_hydrate,
    ),
    ToolCommand(
        "bench-backup",
        "a backup's base and a restore of a loaded volume, in MB/s",
        "sixfold.tools.backupbench",
        cmd_bench_backup,
    ),
    ToolCommand(
        "bench-clone",
        "how long a clone takes, for a small and a large volume",
        "sixfold.tools.clonebench",
        cmd_bench_clone,
    ),
    ToolCommand(
        "bench-region",
        "a secondary region's replication lag under load, and the primary's rate",
        "sixfold.tools.regionbench",
        cmd_bench_region,
    ),
    ToolCommand(
        "bench-transport",
        "one message's server CPU by transport: gRPC unary, gRPC stream, framed TCP",
        "sixfold.tools.transportbench",
        cmd_bench_transport,
        description="Serves each kind of message from a server process of its own on loopback "
        "(uvloop), answered at once, and prints messages/s and the server's and this client's "
        "CPU per message. Modes: unary (a WritePages call with one page change), unary-guard "
        "(the same behind sixfold's interceptor), stream (an AppendBatch and its ack on "
        "AppendStream), framed (the same batch and ack on plain TCP), store (what a node does "
        "with one batch besides receiving it: CRCs, LMDB put and commit with fsync).",
    ),
    ToolCommand(
        "bench-sql",
        "SQL commits/s, redo vs page bytes and reader lag on a fresh cluster",
        "sixfold.tools.sqlbench",
        cmd_bench_sql,
        description="Start a fresh cluster (nodes, writer, readers) in a temporary directory; "
        "32 clients send single-row INSERT/UPDATE transactions to the writer's Sql API. "
        "Prints commits/s, commit latency, redo bytes per commit against the changed page "
        "bytes, CPU seconds per process, then the reader's lag behind acknowledged commits "
        "with the load paced to --lag-rate commits/s, each next to its target.",
    ),
)


def _add_tool_command(
    sub: argparse._SubParsersAction, tool: ToolCommand, wanted: Collection[str] | None
) -> None:
    """The tool's command; its options and description only if `wanted` names it (None:
    every command in full, for help and its tests)."""
    p = sub.add_parser(tool.name, help=tool.help)
    p.set_defaults(fn=tool.fn)
    if wanted is not None and tool.name not in wanted:
        return
    module = importlib.import_module(tool.module)
    p.description = tool.description or (module.__doc__ if tool.doc else None)
    getattr(module, tool.add_arguments)(p)


def build_parser(wanted: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; a tool's command is built in full only if `wanted` (the command
    line's words) names it, or `wanted` is None."""
    parser = argparse.ArgumentParser(
        prog="sixfold",
        description=f"A quorum storage engine on Aurora's design: {COPIES} storage nodes in "
        f"{len(AZS)} AZs, a writer, readers.",
    )
    parser.add_argument(
        "--dir",
        default=os.environ.get("SIXFOLD_DIR", str(cluster.DEFAULT_DIR)),
        help="cluster directory (default $SIXFOLD_DIR or ./.sixfold)",
    )
    parser.add_argument(
        "--token",
        help="the token to present where the cluster asks for one (default: SIXFOLD_TOKEN, "
        "else the operator's token of the cluster in --dir)",
    )
    parser.add_argument(
        "--compose",
        action="store_true",
        help="talk to the docker compose cluster (ports from docker-compose.yml) instead of "
        "the process cluster in --dir; also SIXFOLD_COMPOSE=1",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up",
        help=f"start a local cluster: {COPIES} storage nodes, a writer, "
        f"{len(cluster.READER_NAMES)} readers",
    )
    p.add_argument("--detach", action="store_true", help="return once the cluster is healthy")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every link, with a CA and certificates made in DIR/tls (kept for "
        "this cluster directory; the CLI and the DB-API client find them there, other "
        "clients take SIXFOLD_TLS_DIR); the default is plaintext on loopback",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="callers that are not cluster members need a token with a role (read, write, "
        "admin); needs --tls; an admin token for the operator is made in DIR/auth (kept for "
        "this cluster directory)",
    )
    p.add_argument(
        "--partitionable",
        action="store_true",
        help="route node links through a TCP interposer so `fuzz --nemesis partition` can cut "
        "them (kept for this cluster directory; the default talks directly)",
    )
    p.add_argument(
        "--base-port",
        type=int,
        metavar="N",
        help="ports: the writer at N, nodes a1..c2 at N+1..N+6, spares a3 b3 c3 at N+7..N+9, "
        "readers r1, r2 at N+101, N+102 "
        f"(default {cluster.BASE_PORT_DEFAULT}, as in docker-compose.yml; an existing cluster "
        "directory keeps its ports unless this is given)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTHY_TIMEOUT_S,
        help="seconds to wait for the cluster to become healthy (default %(default)s)",
    )
    p.add_argument(
        "--spares",
        type=int,
        choices=(0, 1),
        default=0,
        help="spare storage nodes per AZ (a3 b3 c3), ready to replace a dead node with "
        "`sixfold replace` (default 0; kept for this cluster directory)",
    )
    p.add_argument(
        "--region",
        metavar="NAME",
        help="this cluster's region name (issue 16; default: primary); with --replica-of, "
        "the new secondary region's name",
    )
    p.add_argument(
        "--replica-of",
        metavar="DIR",
        help="start a secondary region of the cluster in DIR: its nodes are seeded with the "
        "primary's pages, then a replication agent keeps them up with its log; readers only",
    )
    p.set_defaults(fn=cmd_up)

    from sixfold.tools.membership import add_replace_arguments

    p = sub.add_parser(
        "replace",
        help="replace a storage node with a spare of its AZ, without stopping writes",
        description="Begins a membership change (a new membership epoch): writes need 4 of 6 "
        "of both the old and the new set while the spare hydrates from its peers, then the "
        "spare holds the position. Refused, with nothing changed: a node alive and in sync "
        "(unless --force), a second change while one is in progress, a spare of another AZ, "
        "a spare that holds data.",
    )
    add_replace_arguments(p)
    p.set_defaults(fn=cmd_replace)

    p = sub.add_parser("spares", help="the spare storage nodes and whether each is ready")
    p.set_defaults(fn=cmd_spares)

    glob = sub.add_parser(
        "global", help="secondary regions replicated at the storage tier (issue 16)"
    )
    glob_sub = glob.add_subparsers(dest="global_command", required=True, metavar="ACTION")
    p = glob_sub.add_parser(
        "add-region",
        help="start a secondary region of this cluster, seeded from it now",
        description="A new cluster (six nodes, two readers, a replication agent) whose nodes "
        "start with this volume's pages as of its durable point, then follow its log. Refused: "
        "a name already used, more than five secondaries.",
    )
    p.add_argument("name", help="the region's name (letters, digits, '-')")
    p.add_argument(
        "--into", metavar="DIR", help="its directory (default: region-NAME beside this one)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        metavar="N",
        help="its ports as `up --base-port` (default: free ones)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTHY_TIMEOUT_S,
        help="seconds to wait for it (default %(default)s)",
    )
    p.set_defaults(fn=cmd_global_add)
    p = glob_sub.add_parser(
        "remove-region", help="stop a secondary region and forget it (its data stays)"
    )
    p.add_argument("name")
    p.set_defaults(fn=cmd_global_remove)
    p = glob_sub.add_parser(
        "switchover",
        help="make a secondary region the primary, losing nothing (both regions up)",
        description="Drains the writer, waits until REGION has every commit, starts a writer "
        "there, fences this cluster's nodes at its epoch and turns this cluster into its "
        "secondary. Refused, with nothing changed, when REGION lags more than "
        "SWITCHOVER_LAG_S_MAX or does not catch up in time. Prints the writes' pause.",
    )
    p.add_argument("region")
    p.set_defaults(fn=cmd_global_switchover)
    p = glob_sub.add_parser(
        "failover",
        help="the primary region is gone: make REGION the primary at what it holds",
        description="Starts a writer in REGION at its durable point and prints the RPO (LSNs "
        "and seconds of commits it had not received). This cluster is fenced: started again, "
        "its data is set aside and it rejoins as a secondary.",
    )
    p.add_argument("region")
    p.set_defaults(fn=cmd_global_failover)
    p = glob_sub.add_parser(
        "status", help="each region's durable point, lag (LSNs, seconds) and rate"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_global_status)

    auth = sub.add_parser("auth", help="tokens callers present, with their roles (issue 17)")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    p = auth_sub.add_parser(
        "add",
        help="make a token with a role and print it (only its hash is kept)",
        description="A new token for NAME: read (reads, status), write (and writes, SQL) or "
        "admin (and switchover, replace, node writes). The running cluster takes it within "
        "a second, with no restart; give it to a client as SIXFOLD_TOKEN or --token.",
    )
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("read", "write", "admin"))
    p.set_defaults(fn=cmd_auth_add)
    p = auth_sub.add_parser("list", help="the tokens' names and roles")
    p.set_defaults(fn=cmd_auth_list)
    p = auth_sub.add_parser(
        "remove", help="revoke a token (at once, with no restart): rotate by add, then remove"
    )
    p.add_argument("name")
    p.set_defaults(fn=cmd_auth_remove)
    for action in auth_sub.choices.values():
        action.add_argument(
            "--file",
            type=Path,
            help="a token file of its own (the one a swarm or Kubernetes deployment mounts as "
            "SIXFOLD_AUTH_FILE) instead of the cluster's in --dir",
        )

    certs = sub.add_parser("certs", help="TLS certificates for a cluster (issue 17)")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    p = certs_sub.add_parser(
        "init",
        help="make a CA (once) and a certificate and key per member in DIR",
        description="A CA in DIR (made once, then kept: run again to add members or renew "
        "their certificates) and, for each member and for the client identity, a certificate "
        "naming it, localhost, 127.0.0.1 and --hosts. Members present theirs and check each "
        "other's against the CA (mutual TLS); keys are written readable by their owner only.",
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument(
        "--names",
        default=",".join(cluster.MEMBER_NAMES),
        help="the members, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--hosts",
        default="",
        help="more names or addresses every certificate carries, comma-separated (the hosts "
        "members reach each other by across machines)",
    )
    p.add_argument(
        "--days", type=int, default=365, help="how long the certificates last (default 365)"
    )
    p.set_defaults(fn=cmd_certs_init)

    backup = sub.add_parser("backup", help="continuous backup to an object store (issue 15)")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    p = backup_sub.add_parser(
        "run",
        help="ship the committed log (and a base of page images) to the store until stopped",
        description="Copy the volume's committed log from the storage nodes to an object "
        "store, every --interval seconds, with a base of every page's image first. Objects "
        "are CRC32C'd and written before the manifest that names them.",
    )
    p.add_argument("--to", required=True, metavar="URL", help="the store: file://PATH")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between rounds (default %(default)s)"
    )
    p.add_argument(
        "--rounds", type=int, default=0, help="stop after this many rounds (default 0: never)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics (RPO, bytes, errors) on 127.0.0.1:PORT (default 0: none)",
    )
    p.add_argument(
        "--retention",
        metavar="DURATION",
        help="keep every point of the last DURATION restorable (1d to 35d, e.g. 35d) and "
        "delete what none of them nor any snapshot needs (default: keep everything)",
    )
    p.add_argument(
        "--base-every",
        default="1h",
        metavar="DURATION",
        help="take a new base of every page this often (default %(default)s): retention "
        "frees nothing older than the newest base a restore point needs",
    )
    p.set_defaults(fn=cmd_backup_run)
    p = backup_sub.add_parser("status", help="the restore window and what is stored")
    p.add_argument("--to", required=True, metavar="URL", help="the store: file://PATH")
    p.set_defaults(fn=cmd_backup_status)

    snap = sub.add_parser("snapshot", help="named restore points that retention keeps")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    for action, text in (
        ("create", "name the backup's newest restore point"),
        ("list", "the snapshots"),
        ("delete", "forget a snapshot"),
        ("restore", "a new cluster holding the volume as of a snapshot"),
    ):
        p = snap_sub.add_parser(action, help=text)
        if action != "list":
            p.add_argument("name", help="the snapshot's name (letters, digits, - and _)")
        p.add_argument("--backup", required=True, metavar="URL", help="file://PATH or s3://...")
        if action == "restore":
            p.add_argument("--into", required=True, help="the new cluster's directory")
        p.set_defaults(fn=cmd_snapshot)

    p = sub.add_parser(
        "clone",
        help="a copy-on-write clone of the volume, made in time independent of its size",
        description="Make a new process cluster in --into that starts as this volume at its "
        "durable point and shares every page with it until one side writes it: writes to "
        "either never show in the other. The source's nodes keep the pages the clone shares "
        "(one version per page written since), until `--drop`. The clone reads them from the "
        "source's directories, so it lives on the same host.",
    )
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--into", metavar="DIR", help="make a clone in this new directory")
    action.add_argument("--list", action="store_true", help="the clones sharing this volume")
    action.add_argument(
        "--drop", metavar="DIR", help="delete the (stopped) clone in DIR and release its pages"
    )
    action.add_argument(
        "--release", metavar="ID", help="release the pages of a clone whose directory is gone"
    )
    p.add_argument("--id", help="the clone's name (default: its directory's name and the time)")
    p.set_defaults(fn=cmd_clone)

    p = sub.add_parser(
        "restore",
        help="a new cluster holding the volume as of a point in a backup",
        description="Build a new process cluster in --into holding exactly the volume as of "
        "the last commit at or before --to-lsn (or --to-time) in the backup at --from. "
        "Every object is CRC-checked first; a point outside the backup is refused with the "
        "window it covers.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="URL", help="file://PATH")
    point = p.add_mutually_exclusive_group(required=True)
    point.add_argument("--to-lsn", type=int, help="restore to the last commit at or below it")
    point.add_argument(
        "--to-time", help="restore to the newest point durable by then (ISO 8601, or epoch s)"
    )
    p.add_argument("--into", help="the new cluster's directory (new or empty)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="with --compose: replace the compose cluster's volume with the restored one",
    )
    p.set_defaults(fn=cmd_restore)

    p = sub.add_parser("down", help="stop the local cluster")
    p.set_defaults(fn=cmd_down)

    p = sub.add_parser(
        "status",
        help="nodes, writer, readers and quorum availability",
        description="Every storage node (up, SCL, how far behind the writer's VDL, epoch, "
        "log records and page versions kept) and every instance (its role now, which follows "
        "failovers and switchovers, its VDL or read point, its address), then the quorums.",
        epilog="exit codes: 0 the cluster takes writes; 1 read-only (a read quorum, but no "
        "writer accepting writes or no write quorum); 2 unavailable (fewer than "
        f"{READ_QUORUM} nodes "
        "answer); 3 no cluster set up in --dir (nothing asked)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_status)

    for name, fn, verb in (("kill", cmd_kill, "SIGKILL"), ("start", cmd_start, "restart")):
        p = sub.add_parser(
            name, help=f"{verb} processes by name (a1 ... c2, writer, r1, r2) or a whole AZ"
        )
        p.add_argument(
            "names",
            nargs="*",
            help=f"process names: storage nodes {' '.join(NODE_NAMES)}; instances "
            f"{' '.join(cluster.INSTANCE_NAMES)} (whichever is the writer now)",
        )
        p.add_argument("--az", choices=("a", "b", "c"), help="every storage node of this AZ")
        p.set_defaults(fn=fn)

    p = sub.add_parser(
        "watch",
        help="a live view of the quorum: nodes by AZ, writer, readers, events",
        description=f"Redraws about 4 times a second: the {COPIES} nodes grouped by AZ (up or down, "
        "SCL, how far behind VDL, epoch), the write and read quorums, each instance's role "
        "with its VDL or read point and lag, the commit rate over the last 15 s, and the last "
        "cluster events. Ctrl-C ends it. `--compose` watches the compose cluster.",
    )
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(fn=cmd_watch)

    p = sub.add_parser(
        "dashboard",
        help="the live quorum as a web page on 127.0.0.1",
        description="Serves one page on 127.0.0.1: the three AZs as columns with a tile per "
        "node, the writer and the readers, a commit-rate and reader-lag chart and the last "
        "events, updated live by server-sent events. `--compose` shows the compose cluster.",
    )
    p.add_argument("--port", type=int, default=7300, help="the page's port on 127.0.0.1")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(fn=cmd_dashboard)

    p = sub.add_parser(
        "logs",
        help="the members' logs (every member's, prefixed, or one); -f follows them",
        description="Print the last lines of each member's log: DIR/logs/NAME.log for the "
        "process cluster, `docker logs` for the compose cluster (--compose). With -f, keep "
        "printing new lines until Ctrl-C.",
    )
    p.add_argument("name", nargs="?", help="one member: a1 ... c2, writer, r1, r2 (default: all)")
    p.add_argument("-f", "--follow", action="store_true", help="print new lines as they come")
    p.add_argument("-n", "--lines", type=int, default=20, help="lines from the end of each log")
    p.set_defaults(fn=cmd_logs)

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
        "sql",
        help="run SQL on the writer (or a reader) as one transaction; print its rows",
        description="Run SQL as one request: on the writer the statements (separated by ';') "
        "are one transaction, committed once durable; on a reader (--reader) they read one "
        "snapshot and writes are refused. Prints the rows as a table, or what the last "
        "statement did, as psql does (INSERT 0 1, UPDATE 2, CREATE TABLE). "
        "Exit code 1, with a one-line error, when SQLite or the cluster refuses it.",
    )
    p.add_argument("sql", help='the SQL text, e.g. "SELECT * FROM t"')
    p.add_argument("--reader", help="run it on this reader (r1, r2) instead of the writer")
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document: columns, rows (blobs as {"blob_hex": ...}), '
        "rows_changed, commit_lsn, read_point",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait (default %(default)s)"
    )
    p.set_defaults(fn=cmd_sql)

    p = sub.add_parser(
        "shell",
        help="an interactive SQL shell on the writer (or a reader)",
        description="Statements end with ';' and may span lines; each runs on its own unless "
        "you type BEGIN (then COMMIT or ROLLBACK). Dot commands: .help, .tables, .schema, "
        ".quit. Reads statements from stdin when it is not a terminal "
        '(echo "SELECT 1;" | sixfold shell) and then exits 1 if any statement failed.',
    )
    p.add_argument("--reader", help="connect to this reader (r1, r2) instead of the writer")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds each statement may take (default %(default)s)",
    )
    p.set_defaults(fn=cmd_shell)

    p = sub.add_parser(
        "switchover",
        help="move the writer role to another instance, losing nothing",
        description="Drains the current writer (no new commits; every commit it took made "
        "durable), then NAME wins a new volume epoch and takes writes. The old writer steps "
        "down to a reader. Prints how long writes were paused.",
    )
    p.add_argument("name", choices=cluster.INSTANCE_NAMES, help="the instance to become the writer")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait (default %(default)s)"
    )
    p.set_defaults(fn=cmd_switchover)

    p = sub.add_parser(
        "chaos", help="kill an AZ, then one more node, under a write load; restart; count losses"
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds to watch each step")
    p.add_argument("--limit", type=float, default=60.0, help="seconds any step may wait at most")
    p.set_defaults(fn=cmd_chaos)

    for tool in TOOL_COMMANDS:
        _add_tool_command(sub, tool, wanted)
    return parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already does or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = "%(default)" in text or "default" in text
        if shown or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _finish_help(parser: argparse.ArgumentParser, summary: str | None = None) -> None:
    """Every command shows its defaults, and a description (its one-line help at least)."""
    parser.formatter_class = _DefaultsFormatter
    if parser.description is None and summary:
        parser.description = summary[0].upper() + summary[1:] + "."
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                _finish_help(sub, helps.get(name))


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(wanted=set(words))
    _finish_help(parser)
    args = parser.parse_args(words)
    if args.token:  # before any channel is opened: every call carries it (sixfold/tls.py)
        os.environ[tls.TOKEN_VARIABLE] = args.token
    try:
        return args.fn(args)
    except SixfoldError as exc:
        print(f"sixfold: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sixfold logs | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
