"""Hosts on a virtual network, for faults that cross one: a host cut off and brought back.

Each host is a Linux network namespace joined to a bridge by a veth pair, with an
address of its own on a private /24 and its own hostname (a UTS namespace, made when a
command starts on it). The services stay in the machine's own namespace and listen on the
bridge's address (``gateway``), so a host reaches PostgreSQL, Redis and the Spotify
stand-in only over its link. ``cut`` takes the bridge's end of a host's link down: the
host's packets go nowhere and its open connections hang, as in a partition; ``heal``
brings the link back and those connections carry on where they were.

Making namespaces needs root (CAP_NET_ADMIN) and iproute2; ``unavailable()`` says why
they cannot be made here, for a test to skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


def _ip(*args: str, namespace: str | None = None) -> None:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if shutil.which("unshare") is None:
        return "util-linux's `unshare` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    probe = f"automation-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.decode(errors='replace').strip()}"
    _ip("netns", "delete", probe)
    return None


@dataclass
class Host:
    name: str  # also its hostname
    namespace: str
    address: str
    link: str  # the bridge's end of its veth pair

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host: in its namespace, with its own hostname."""
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh",
            *argv,
        ]  # fmt: skip


@dataclass
class Network:
    """A bridge and its hosts; ``close`` removes them and whatever still runs on them."""

    subnet: int = field(default_factory=lambda: random.randrange(100, 250))
    tag: str = field(default_factory=lambda: f"{random.randrange(16**4):04x}")
    hosts: list[Host] = field(default_factory=list)
    _bridge_up: bool = False

    @property
    def gateway(self) -> str:
        return f"10.{self.subnet}.0.1"

    @property
    def cidr(self) -> str:
        return f"10.{self.subnet}.0.0/24"

    @property
    def bridge(self) -> str:
        return f"aut{self.tag}br"

    def open(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        number = len(self.hosts) + 1
        host = Host(
            name=name,
            namespace=f"aut{self.tag}-{name}",
            address=f"10.{self.subnet}.0.{10 + number}",
            link=f"aut{self.tag}h{number}",
        )
        inside = f"aut{self.tag}i{number}"
        _ip("netns", "add", host.namespace)
        self.hosts.append(host)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("addr", "add", f"{host.address}/24", "dev", inside, namespace=host.namespace)
        _ip("link", "set", inside, "up", namespace=host.namespace)
        _ip("link", "set", "lo", "up", namespace=host.namespace)
        _ip("link", "set", host.link, "master", self.bridge)
        _ip("link", "set", host.link, "up")
        return host

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(subprocess.SubprocessError):
                pids = subprocess.run(
                    ["ip", "netns", "pids", host.namespace],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("link", "delete", host.link)  # its peer goes with it
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "delete", host.namespace)
        self.hosts.clear()
        if self._bridge_up:
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("link", "delete", self.bridge)
            self._bridge_up = False


@contextlib.contextmanager
def network() -> Iterator[Network]:
    made = Network()
    try:
        yield made.open()
    finally:
        made.close()
