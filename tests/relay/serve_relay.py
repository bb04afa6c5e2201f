"""``python -m tests.relay.serve_relay CONFIG``: smtpgate with its relay in one real process.

Until the server wires ``Relay`` into ``smtpgate serve``, the crash tests run
this: load the TOML file, start ``Server`` with the relay target and the
deliverer, stop cleanly on SIGTERM (SIGKILL is what the tests send).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from smtpgate.config.load import load_config
from smtpgate.relay.service import Relay
from smtpgate.server.app import Server


async def run(path: Path) -> None:
    config = load_config(path)
    relay = Relay(config)
    server = Server(config, delivery=relay.target)
    await server.start()
    await relay.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(grace=5.0)
    await relay.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(run(Path(sys.argv[1])))
