"""Configuration: the typed schema (``schema``) and TOML loading (``load``)."""

from smtpgate.config.load import ConfigError, build_config, find_config_path, load_config
from smtpgate.config.schema import (
    KNOWN_MECHANISMS,
    AuthConfig,
    Config,
    DeliveryConfig,
    LimitsConfig,
    ListenerConfig,
    ServerConfig,
    StoreConfig,
    TlsConfig,
)

__all__ = [
    "KNOWN_MECHANISMS",
    "AuthConfig",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ServerConfig",
    "StoreConfig",
    "TlsConfig",
    "build_config",
    "find_config_path",
    "load_config",
]
