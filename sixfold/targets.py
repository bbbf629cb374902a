"""What the CLI talks to: the local process cluster, or the docker compose cluster.

Both give the same endpoints (six nodes, the writer, two readers) and can kill and start
their members: with SIGKILL and a new process, or with `docker kill` and `docker start`.
The compose cluster is chosen with `--compose` (or SIXFOLD_COMPOSE=1); its ports are the
ones docker-compose.yml publishes on localhost, overridable with the same variables.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES, SPARE_NAMES
from sixfold.tools.partition import InterposerPartitioner, IptablesPartitioner, Partitioner

COMPOSE_PORT_DEFAULTS = cluster.ports_from(cluster.BASE_PORT_DEFAULT)
CONTAINER_PREFIX_DEFAULT = "sixfold-"  # docker-compose.yml names containers PREFIX + NAME
DOCKER_TIMEOUT_S = 60.0
# `docker pause` freezes the container's cgroup; the kernel can fail to freeze it in runc's
# time limit ("unable to freeze") while a process sits in an fsync. Try this many times.
PAUSE_ATTEMPTS = 3
PAUSE_RETRY_S = 0.2


def compose_port(name: str) -> int:
    """The localhost port of a compose service: SIXFOLD_<NAME>_PORT, or the default."""
    return _env_port(f"SIXFOLD_{name.upper()}_PORT", COMPOSE_PORT_DEFAULTS[name])


def compose_metrics_port(name: str) -> int:
    """Where a compose service's metrics are published: SIXFOLD_<NAME>_METRICS_PORT, or 1000
    above its default gRPC port (docker-compose.yml)."""
    default = COMPOSE_PORT_DEFAULTS[name] + cluster.METRICS_PORT_OFFSET
    return _env_port(f"SIXFOLD_{name.upper()}_METRICS_PORT", default)


def _env_port(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SixfoldError(f"{variable}={raw!r} is not a port number") from None


class ProcessTarget:
    """The local cluster of processes in a directory (`sixfold up`)."""

    label = "process cluster"

    def __init__(self, directory: Path) -> None:
        self.layout = cluster.ClusterLayout.load(directory)

    @property
    def nodes(self) -> dict[str, str]:
        return self.layout.nodes

    def find_writer_address(self) -> str:
        return self.layout.find_writer_address()

    def reader_address(self, name: str) -> str:
        return self.layout.reader_address(name)

    def instance_address(self, name: str) -> str:
        """Where instance `name` (the writer process or a reader) serves."""
        return cluster.instance_address_in(self.layout.processes, name)

    def metrics_url(self, name: str) -> str | None:
        return self.layout.metrics_url(name)

    def running(self) -> bool:
        """Whether any of the cluster's processes runs."""
        return any(cluster.is_running(info) for info in self.layout.processes.values())

    def kill(self, names: list[str]) -> list[str]:
        return cluster.kill_processes(self.layout, names)

    def start(self, names: list[str]) -> list[str]:
        started = [n for n in names if not cluster.is_running(self.layout.processes[n])]
        cluster.start_processes(self.layout, names)
        return started

    def lose_disk(self, name: str) -> None:
        """Storage node `name` loses its disk for good: killed, its data directory removed.
        Started again, it comes back empty."""
        cluster.kill_processes(self.layout, [name])
        shutil.rmtree(Path(self.layout.directory) / name, ignore_errors=True)

    def pause(self, names: list[str]) -> list[str]:
        return cluster.kill_processes(self.layout, names, signal.SIGSTOP)

    def resume(self, names: list[str]) -> list[str]:
        return cluster.kill_processes(self.layout, names, signal.SIGCONT)

    def partitioner(self) -> Partitioner:
        """Cuts links through the interposer (the cluster must be `up --partitionable`)."""
        return InterposerPartitioner(self.layout)


@dataclass
class ComposeTarget:
    """The docker compose cluster, one container per member, ports on localhost."""

    label = "compose cluster"

    def __init__(self) -> None:
        self._spares: list[str] | None = None

    @property
    def nodes(self) -> dict[str, str]:
        """The six nodes, and the spares whose containers exist (the "spares" profile)."""
        if self._spares is None:
            self._spares = [n for n in SPARE_NAMES if self._exists(n)]
        return {n: f"127.0.0.1:{compose_port(n)}" for n in (*NODE_NAMES, *self._spares)}

    def _exists(self, name: str) -> bool:
        try:
            self._state(name)
        except SixfoldError:
            return False
        return True

    def find_writer_address(self) -> str:
        """The current writer: asked of the instances, since a reader may have taken over."""
        from sixfold.client.discovery import current_writer_address

        seeds = instance_seeds(self)
        return current_writer_address(seeds, fallback=seeds[0])

    def instance_address(self, name: str) -> str:
        if name not in cluster.INSTANCE_NAMES:
            raise SixfoldError(
                f"unknown instance {name!r}: the instances are {', '.join(cluster.INSTANCE_NAMES)}"
            )
        return f"127.0.0.1:{compose_port(name)}"

    def reader_address(self, name: str) -> str:
        """Any instance may be a reader now (roles follow the topology)."""
        return self.instance_address(name)

    def metrics_url(self, name: str) -> str | None:
        return f"http://127.0.0.1:{compose_metrics_port(name)}/metrics"

    def kill(self, names: list[str]) -> list[str]:
        running = [n for n in names if self._running(n)]
        if running:
            docker("kill", *(container_name(n) for n in running))
        return running

    def start(self, names: list[str]) -> list[str]:
        stopped = [n for n in names if not self._running(n)]
        if stopped:
            docker("start", *(container_name(n) for n in stopped))
        return stopped

    def lose_disk(self, name: str) -> None:
        """Storage node `name` loses its disk for good: its container is killed and its
        volume emptied, by a throwaway container of the same image (a volume in use by a
        container, even a stopped one, cannot be removed). Started again, it comes back
        empty."""
        self.kill([name])
        self._in_volume_of(name, "find /data -mindepth 1 -delete")

    def load_volume(self, name: str, source: Path) -> None:
        """Storage node `name`'s volume holds exactly the data directory `source` (a
        restore's): its container is killed, the volume emptied and `source` copied in, owned
        as the volume's root is."""
        self.kill([name])
        copy = (
            "find /data -mindepth 1 -delete && cp -R /restore/. /data/ && "
            'chown -R "$(stat -c %u:%g /data)" /data'
        )
        self._in_volume_of(name, copy, f"{source.resolve()}:/restore:ro")

    def _in_volume_of(self, name: str, script: str, *mounts: str) -> None:
        """Run `script` in a throwaway container of the node's image with its data volume at
        /data (a volume in use by a container, even a stopped one, cannot be removed)."""
        container = container_name(name)
        volumes = docker("inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", container).split()
        image = docker("inspect", "-f", "{{.Image}}", container).strip()
        if len(volumes) != 1:
            raise SixfoldError(f"{container} mounts {volumes or 'no volume'}, not one data volume")
        extra = [arg for m in mounts for arg in ("-v", m)]
        docker(
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            "-v",
            f"{volumes[0]}:/data",
            *extra,
            image,
            "-c",
            script,
        )

    def pause(self, names: list[str]) -> list[str]:
        """Freeze each running container; where the freezer keeps failing, SIGSTOP its main
        process instead (the service's command is PID 1): silent either way."""
        running = [n for n in names if self._running(n)]
        for name in running:
            if not _freeze(container_name(name)):
                docker("kill", "--signal", "SIGSTOP", container_name(name))
        return running

    def resume(self, names: list[str]) -> list[str]:
        """Unfreeze the frozen containers, and SIGCONT every running one (a no-op unless
        `pause` fell back to SIGSTOP, which `docker inspect` cannot tell from running)."""
        states = {n: self._state(n) for n in names}
        paused = [n for n, state in states.items() if state == "paused"]
        if paused:
            docker("unpause", *(container_name(n) for n in paused))
        running = [n for n, state in states.items() if state == "running"]
        for name in running:  # one by one: one that exited meanwhile has nothing to resume
            try:
                docker("kill", "--signal", "SIGCONT", container_name(name))
            except SixfoldError as error:
                if "is not running" not in str(error):
                    raise
        return paused + running

    def partitioner(self) -> Partitioner:
        """Cuts links with iptables in the containers' network namespaces (needs root)."""
        return IptablesPartitioner(container_name)

    def _state(self, name: str) -> str:
        return docker("inspect", "-f", "{{.State.Status}}", container_name(name)).strip()

    def _running(self, name: str) -> bool:
        out = docker("inspect", "-f", "{{.State.Running}}", container_name(name))
        return out.strip() == "true"


def instance_seeds(target: ProcessTarget | ComposeTarget) -> list[str]:
    """Where the instances serve: any of them answers who the writer is."""
    return [target.instance_address(n) for n in cluster.INSTANCE_NAMES]


def current_writer_name(target: ProcessTarget | ComposeTarget) -> str:
    """The instance that is the writer now: a reader may have taken over from `writer`."""
    from sixfold.client.discovery import newest_topology

    return newest_topology(instance_seeds(target)).writer_name


def _freeze(container: str) -> bool:
    """`docker pause`, tried PAUSE_ATTEMPTS times: whether the container is frozen."""
    for attempt in range(PAUSE_ATTEMPTS):
        try:
            docker("pause", container)
            return True
        except SixfoldError as error:
            if "unable to freeze" not in str(error):
                raise
            if attempt + 1 < PAUSE_ATTEMPTS:
                time.sleep(PAUSE_RETRY_S)
    return False


def container_name(name: str) -> str:
    return os.environ.get("SIXFOLD_CONTAINER_PREFIX", CONTAINER_PREFIX_DEFAULT) + name


def docker(*args: str) -> str:
    if shutil.which("docker") is None:
        raise SixfoldError("docker is not installed or not on PATH")
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S
    )
    if result.returncode != 0:
        raise SixfoldError(
            f"docker {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def compose_command() -> list[str]:
    """`docker compose` (v2) where it exists, else the older `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SixfoldError("neither `docker compose` nor `docker-compose` is available")


def use_compose(flag: bool) -> bool:
    return flag or os.environ.get("SIXFOLD_COMPOSE", "") not in ("", "0")


def load_target(directory: Path, compose: bool) -> ProcessTarget | ComposeTarget:
    return ComposeTarget() if use_compose(compose) else ProcessTarget(directory)
