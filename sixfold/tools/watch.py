"""`sixfold watch`: a live terminal view of the quorum, redrawn about 4 times a second.

The six nodes grouped by AZ (up or down, SCL, how far behind VDL, epoch), the write and read
quorums, the writer with its VDL and commit rate over time, each reader's read point and lag,
and the last cluster events. Kill containers in another terminal and watch the quorum go and
come back. Built from the same status `sixfold status` gathers (sixfold/tools/status.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sixfold.cluster import Endpoints
from sixfold.core.quorum import AZS, NODE_NAMES, READ_QUORUM, WRITE_QUORUM, nodes_in_az
from sixfold.tools.events import History
from sixfold.tools.status import gather_status

REFRESH_S = 0.25
STATE_TIMEOUT_S = 1.0  # a member slower than this is shown down (a hung one slows the view)
EVENTS_SHOWN_MAX = 5  # the whole view fits an 80 x 24 terminal
SPARK = "▁▂▃▄▅▆▇█"


class View(History):
    """The screen, drawn from the history of looks (sixfold/tools/events.py)."""

    def render(self) -> Group:
        status = self.status
        assert status is not None, "render after the first update"
        return Group(
            Columns([self._az(status, az) for az in AZS], expand=True),
            self._quorums(status),
            self._instances(status),
            Panel(
                "\n".join(list(self.events)[-EVENTS_SHOWN_MAX:]) or "(none yet)",
                title="events",
                title_align="left",
            ),
        )

    def _az(self, status: dict[str, Any], az: str) -> Panel:
        nodes = {n["name"]: n for n in status["nodes"]}
        lines = []
        for name in nodes_in_az(az):
            n = nodes[name]
            if n["up"]:
                line = Text(f"{name}  UP  ", style="bold green")
                line.append(
                    f"scl {n['scl']}\n    behind {n['behind_vdl']}  epoch {n['epoch']}", style=""
                )
            else:
                line = Text(f"{name}  DOWN\n    not answering", style="bold red")
            lines.append(line)
        up = sum(1 for name in nodes_in_az(az) if nodes[name]["up"])
        return Panel(
            Text("\n").join(lines), title=f"AZ {az}", border_style="green" if up else "red"
        )

    def _quorums(self, status: dict[str, Any]) -> Text:
        up = status["nodes_up"]
        line = Text(f"{up} of {len(NODE_NAMES)} nodes up   ")
        for label, ok, need in (
            ("write quorum", status["write_quorum"], WRITE_QUORUM),
            ("read quorum", status["read_quorum"], READ_QUORUM),
        ):
            state = "available" if ok else "UNAVAILABLE"
            line.append(f"{label}: {state} ({need} needed)   ", style="green" if ok else "bold red")
        line.append(f"cluster: {status['health']}", style="bold")
        return line

    def _instances(self, status: dict[str, Any]) -> Table:
        table = Table(expand=True, show_edge=False)
        for column in ("instance", "role", "epoch", "VDL / read point", "lag", "status"):
            table.add_column(column)
        writer = status["writer"]
        vdl = writer["vdl"]
        for i in status["instances"]:
            if not i["up"]:
                table.add_row(i["name"], Text("DOWN", style="bold red"), "-", "-", "-", "")
                continue
            is_writer = i["name"] == writer["name"]
            point = i["vdl"] if is_writer else i["read_point"]
            lag = "" if is_writer or vdl is None or point is None else str(max(vdl - point, 0))
            state = writer["status"] if is_writer else ""
            table.add_row(i["name"], i["role"], str(i["epoch"]), str(point), lag, state)
        rate = self.rates[-1] if self.rates else 0.0
        table.caption = f"commit rate {rate:,.0f} LSN/s  {sparkline(self.rates)}"
        return table


def sparkline(values: deque[float]) -> str:
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[round(v / top * (len(SPARK) - 1))] for v in values)


def run_watch(target: Endpoints, seconds: float | None = None) -> int:
    """Redraw until Ctrl-C (or `seconds`, for tests and scripts)."""
    view = View()
    console = Console()
    deadline = time.monotonic() + seconds if seconds else None
    view.update(asyncio.run(gather_status(target, STATE_TIMEOUT_S)), time.monotonic())
    with Live(
        view.render(), console=console, refresh_per_second=1 / REFRESH_S, screen=False
    ) as live:
        while deadline is None or time.monotonic() < deadline:
            started = time.monotonic()
            view.update(asyncio.run(gather_status(target, STATE_TIMEOUT_S)), time.monotonic())
            live.update(view.render())
            time.sleep(max(REFRESH_S - (time.monotonic() - started), 0))
    return 0
