"""``Relay``: the relay target and its deliverer, with one lifecycle for the server.

    relay = Relay(config)
    server = Server(config, delivery=relay.target)
    await relay.start()      # the background deliverer
    ...
    await relay.stop()       # after the server stopped accepting

With several worker processes every worker runs its own ``Relay``: each
drains the queue, and the per-entry ``flock`` (``relay.queue``) makes sure
one entry is handled by one process at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from smtpgate.config.schema import Config
from smtpgate.delivery.factory import MAIL_DIR
from smtpgate.delivery.maildir import MaildirTarget
from smtpgate.relay.deliverer import Deliverer
from smtpgate.relay.queue import QUEUE_DIR, QueueStore
from smtpgate.relay.target import RelayTarget


class Relay:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.store = QueueStore(config.data_dir / QUEUE_DIR)
        maildir = MaildirTarget(config.data_dir / MAIL_DIR, hostname=config.hostname)
        self.target = RelayTarget(self.store, maildir, config.delivery.local_domains)
        self.deliverer = Deliverer(config, self.store, self.target, clock=clock)

    async def start(self) -> None:
        await asyncio.to_thread(self.target.maildir.recover)  # the local part's leftovers
        await self.deliverer.start()

    async def stop(self) -> None:
        await self.deliverer.stop()
