"""smtpgate: an authenticated SMTP submission server and embeddable library.

    from smtpgate import Server, load_config
    async with Server(load_config(path)) as server: ...
"""

from smtpgate.config.load import load_config
from smtpgate.server.app import Server

__all__ = ["Server", "__version__", "load_config"]
__version__ = "0.1.0"
