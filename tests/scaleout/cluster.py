"""Two ``smtpgate serve`` instances behind HAProxy (contrib/haproxy/haproxy.cfg) with
PROXY v2, sharing one SQLite user file and one Redis: the scale-out topology of
docs/scaling.md on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from smtpgate.server.proxy_header import v2_header
from tests.attacks.raw import Raw, plain
from tests.e2e.conftest import PASSWORD, create_user, free_port
from tests.scaleout.engines import HAProxy, Instance

PER_IP = 2  # max_connections_per_ip
IP_FAILURES = 3  # ip_failure_limit


def instance_data(
    root: Path, name: str, port: int, redis_url: str, on_failure: str
) -> dict[str, Any]:
    return {
        "data_dir": str(root / name),
        "hostname": f"{name}.test",
        "listener": [{"address": f"127.0.0.1:{port}", "tls": "starttls", "require_auth": True,
                      "proxy_protocol": True, "trusted_proxies": ["127.0.0.0/8"]}],
        "store": {"url": f"sqlite:///{root}/users.db"},  # one user file for both
        "state": {"url": redis_url, "on_failure": on_failure},
        "auth": {"failure_delay": 0.0, "plaintext_requires_tls": False,
                 "max_failures_per_connection": 100, "ip_failure_limit": IP_FAILURES,
                 "ip_failure_window": 600.0, "user_failure_limit": 1000},
        "limits": {"max_connections_per_ip": PER_IP},
    }


class ScaleOut:
    def __init__(self, root: Path, redis_url: str, on_failure: str = "open") -> None:
        self.root = root
        self.redis_url = redis_url
        self.on_failure = on_failure
        self.ports = (free_port(), free_port())
        self.instances = [self._instance(i) for i in range(2)]
        self.haproxy = HAProxy(root, self.ports)

    def _instance(self, index: int) -> Instance:
        name = "ab"[index]
        data = instance_data(self.root, name, self.ports[index], self.redis_url, self.on_failure)
        return Instance(self.root, data, workers=1)

    def start(self) -> None:
        asyncio.run(create_user(self.instances[0].config))
        for instance in self.instances:
            instance.start()
        self.haproxy.start()

    def restart(self, index: int) -> None:
        """A new process in place of instance ``index`` (after a test killed it)."""
        self.instances[index] = self._instance(index)
        self.instances[index].start()

    def stop(self) -> None:
        self.haproxy.stop()
        for instance in self.instances:
            asyncio.run(instance.stop())

    @property
    def front(self) -> tuple[str, int]:
        return ("127.0.0.1", self.haproxy.port)

    # -- clients ---------------------------------------------------------------------
    async def via_haproxy(self, client_ip: str) -> tuple[Raw, int]:
        """A connection through HAProxy from ``client_ip`` and the code of its greeting."""
        client = await Raw.open(self.front, local=client_ip, greet=False)
        return client, (await client.reply()).code

    async def direct(self, index: int, client_ip: str) -> tuple[Raw, int]:
        """Straight to an instance, with the PROXY v2 header HAProxy would send."""
        client = await Raw.open(("127.0.0.1", self.ports[index]), greet=False)
        await client.send(v2_header((client_ip, 40000), ("127.0.0.1", self.ports[index])))
        return client, (await client.reply()).code


async def auth_code(client: Raw, password: str = PASSWORD) -> int:
    await client.ehlo()
    return (await client.cmd(f"AUTH PLAIN {plain('alice', password)}")).code
