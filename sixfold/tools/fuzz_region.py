"""The fuzz's `region` nemesis and check (issue 16), for a primary with secondary regions.

The nemesis breaks the link between the regions, which is the replication agent: it kills
the agent (then starts it again), or cuts the link by freezing it (SIGSTOP, then SIGCONT):
both regions stay up, and nothing crosses. The primary's clients must not notice either.

After the run, each region must converge: once the primary is healed, its agent runs and
catches up, and every register read through each of the region's readers holds the value
the final reads found through the primary's writer.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sixfold import cluster
from sixfold.clients import ReaderClient
from sixfold.core.errors import RegionError, SixfoldError
from sixfold.targets import ProcessTarget
from sixfold.tools import regions

# A run beside other heavy work (a CI lane building containers, load average 15-20) once
# took more than 60 s to restart its agent and catch up; a quiet machine takes 1-3 s.
CATCH_UP_LIMIT_S = 120.0
SlotRead = Callable[[ReaderClient, int], Awaitable[int | None]]


def region_layouts(target: object) -> list[cluster.ClusterLayout]:
    """The target's secondary regions; refused where there are none to break."""
    if not isinstance(target, ProcessTarget):
        raise RegionError("the region nemesis runs against a process cluster")
    layouts = [cluster.ClusterLayout.load(Path(d)) for d in target.layout.regions.values()]
    if not layouts:
        raise RegionError(
            "the region nemesis needs a secondary region: add one first "
            "(`sixfold global add-region b`)"
        )
    return layouts


def _fresh(region: cluster.ClusterLayout) -> cluster.ClusterLayout:
    """The region as cluster.json has it now: its agent's pid changes as it is restarted."""
    return cluster.ClusterLayout.load(Path(region.directory))


def break_link(region: cluster.ClusterLayout, rng: random.Random) -> tuple[str, str]:
    """Kill the agent or freeze it; what was done, and how to describe it."""
    region = _fresh(region)
    agent = [cluster.AGENT_NAME]
    if rng.random() < 0.5:
        cluster.kill_processes(region, agent)
        return "region-kill", f"region {region.region}'s agent (the inter-region link)"
    cluster.kill_processes(region, agent, signal.SIGSTOP)
    return "region-cut", f"region {region.region}'s link (its agent frozen)"


def mend_link(region: cluster.ClusterLayout) -> None:
    """The agent running again, whichever way its link was broken."""
    region = _fresh(region)
    cluster.kill_processes(region, [cluster.AGENT_NAME], signal.SIGCONT)
    cluster.start_processes(region, [cluster.AGENT_NAME])


async def check_converged(
    primary: Path,
    layouts: list[cluster.ClusterLayout],
    final: dict[int, int | None],
    read_slot: SlotRead,
) -> list[str]:
    """Each region caught up with the primary, and each register read through each of its
    readers equal to `final` (the values read through the primary's writer at the end)."""
    problems: list[str] = []
    for layout in layouts:
        mend_link(layout)
        last = await _caught_up(primary, layout.region)
        if last is not None:
            problems.append(
                f"region {layout.region} did not catch up in {CATCH_UP_LIMIT_S:g} s "
                f"(last seen: {_describe(last)})"
            )
            continue
        for reader in cluster.READER_NAMES:
            client = ReaderClient(layout.processes[reader].address, reader)
            try:
                for key, value in final.items():
                    got = await read_slot(client, key)
                    if got != value:
                        problems.append(
                            f"region {layout.region} {reader}: key {key} is {got}, the primary "
                            f"has {value}"
                        )
            except SixfoldError as exc:
                problems.append(f"region {layout.region} {reader}: {exc}")
            finally:
                await client.close()
    return problems


async def _caught_up(primary: Path, name: str) -> dict[str, Any] | None:
    """None once region `name` has caught up; else its last status (`global status`)."""
    deadline = time.monotonic() + CATCH_UP_LIMIT_S
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(regions.global_status, primary)
        view = {r["region"]: r for r in status["regions"]}.get(name) or {}
        if view.get("up") and view.get("lag_lsns") == 0:
            return None
        await asyncio.sleep(0.2)
    return view


def _describe(view: dict[str, Any]) -> str:
    if not view:
        return "not in the primary's status"
    if not view.get("up"):
        return f"down: {view.get('error') or 'no durable point'}"
    text = (
        f"durable LSN {view['durable_lsn']}, {view['lag_lsns']} LSNs behind, agent {view['agent']}"
    )
    return text + (f", {view['error']}" if view.get("error") else "")
