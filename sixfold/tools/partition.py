"""Network partitions for the fuzz nemesis, on either cluster.

A partition is a set of cut pairs of members: a cut pair cannot exchange a byte in either
direction, whoever opened the connection. Two ways to make one:

- the process cluster (`sixfold up --partitionable`): our TCP interposer stalls the links of
  cut pairs (sixfold/tools/interposer.py); no root needed;
- the compose cluster: iptables DROP rules inside one container's network namespace, entered
  from the host with nsenter (root needed; there is no netem in this kernel). Every rule added
  is remembered and deleted on heal; a container restarted since took its namespace, and the
  rules in it, with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sixfold import cluster
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.tools.interposer import read_cuts, read_status, write_cuts

Pair = tuple[str, str]
APPLY_LIMIT_S = 5.0  # how long the interposer may take to put a new cut in force
APPLY_POLL_S = 0.02
COMMAND_TIMEOUT_S = 20.0


class Partitioner(Protocol):
    def cut(self, pairs: list[Pair]) -> None: ...

    def heal(self) -> None: ...


def isolate(member: str, others: list[str]) -> list[Pair]:
    return [(member, other) for other in others if other != member]


def between(group_a: list[str], group_b: list[str]) -> list[Pair]:
    return [(x, y) for x in group_a for y in group_b]


def all_members() -> list[str]:
    return [*NODE_NAMES, cluster.WRITER_NAME, *cluster.READER_NAMES]


# -- the process cluster: the interposer ------------------------------------------------------


@dataclass
class InterposerPartitioner:
    layout: cluster.ClusterLayout

    def __post_init__(self) -> None:
        if not self.layout.partitionable:
            raise SixfoldError(
                "the partition nemesis needs a partitionable process cluster: start it with "
                f"`sixfold up --partitionable --dir {self.layout.directory}` (its links then "
                "go through a TCP interposer that can cut them)"
            )

    def cut(self, pairs: list[Pair]) -> None:
        self._apply(pairs)

    def heal(self) -> None:
        self._apply([])

    def _apply(self, pairs: list[Pair]) -> None:
        directory = Path(self.layout.directory)
        generation = read_cuts(directory)[0] + 1
        write_cuts(directory, generation, pairs)
        self._wait_applied(generation)

    def _wait_applied(self, generation: int) -> None:
        """Return once the interposer reports the generation in force, so the nemesis's
        history line is not earlier than the fault it records."""
        port = self.layout.processes[cluster.INTERPOSER_NAME].port
        deadline = time.monotonic() + APPLY_LIMIT_S
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                if read_status(port)["generation"] >= generation:
                    return
            except (OSError, TimeoutError, ValueError) as exc:
                last_error = str(exc) or type(exc).__name__
            time.sleep(APPLY_POLL_S)
        raise SixfoldError(
            f"the interposer (status port {port}) did not apply partition generation "
            f"{generation} within {APPLY_LIMIT_S:g} s ({last_error}); is the cluster up? "
            f"see {self.layout.directory}/logs/interposer.log"
        )


# -- the compose cluster: iptables in the containers' network namespaces --------------------


@dataclass(frozen=True)
class Rule:
    pid: int  # the container's init process, whose network namespace holds the rule
    container: str
    spec: tuple[str, ...]  # e.g. ("INPUT", "-s", "172.18.0.3", "-j", "DROP")


@dataclass
class IptablesPartitioner:
    container_name: Callable[[str], str]  # member name -> container name (sixfold.targets)
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        problem = iptables_unavailable()
        if problem:
            raise SixfoldError(
                f"the partition nemesis cannot run on the compose cluster: {problem}"
            )

    def cut(self, pairs: list[Pair]) -> None:
        self.heal()
        for a, b in pairs:
            self._cut_pair(a, b)

    def _cut_pair(self, a: str, b: str) -> None:
        """DROP both directions between a and b, in a's namespace (one end is enough)."""
        inside, outside = self.container_name(a), self.container_name(b)
        pid = container_pid(inside)
        if pid <= 0:
            return  # not running: nothing of it to cut, and no namespace to put a rule in
        for ip in container_ips(outside):
            for spec in (("INPUT", "-s", ip, "-j", "DROP"), ("OUTPUT", "-d", ip, "-j", "DROP")):
                rule = Rule(pid, inside, spec)
                self.rules.append(rule)  # before running it: heal deletes it even if half-done
                nsenter_iptables(pid, "-I", *spec)

    def heal(self) -> None:
        """Delete every rule added; a namespace that is gone took its rules with it."""
        failures = []
        while self.rules:
            rule = self.rules.pop()
            if container_pid(rule.container) != rule.pid:
                continue  # the container stopped or restarted: its old namespace is gone
            try:
                nsenter_iptables(rule.pid, "-D", *rule.spec)
            except SixfoldError as exc:
                if "does a matching rule exist" not in str(exc) and "Bad rule" not in str(exc):
                    failures.append(str(exc))
        if failures:
            raise SixfoldError("could not delete partition rules: " + "; ".join(failures))


def iptables_unavailable() -> str:
    """Why iptables-in-a-namespace partitions cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "it needs root (nsenter into a container's network namespace, then iptables)"
    for tool in ("nsenter", "iptables", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed or not on PATH"
    return ""


def container_pid(container: str) -> int:
    result = _run(["docker", "inspect", "-f", "{{.State.Pid}}", container], check=False)
    try:
        return int(result.stdout.strip()) if result.returncode == 0 else 0
    except ValueError:
        return 0


def container_ips(container: str) -> list[str]:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    out = _run(["docker", "inspect", "-f", fmt, container]).stdout
    ips = out.split()
    if not ips:
        raise SixfoldError(f"container {container} has no IP address (is it running?)")
    return ips


def nsenter_iptables(pid: int, *args: str) -> None:
    _run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "5", *args])


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        raise SixfoldError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result
