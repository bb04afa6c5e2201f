"""``AuthSettings`` and ``ThrottleLimits`` built from the configuration's defaults.

Defaults live in one place, ``config/schema.py`` (``AuthConfig``); the
auth and policy classes have none. Tests take them from there and override
only what they test: ``auth_settings(failure_delay=0)``,
``throttle_limits(ip_failure_limit=3)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from smtpgate.auth.service import AuthSettings
from smtpgate.config.schema import AuthConfig
from smtpgate.policy.throttle import ThrottleLimits

HOSTNAME = "mx.test"


def _from_config(cls: type[Any], overrides: dict[str, Any], **extra: Any) -> Any:
    defaults = AuthConfig()
    values = {
        f.name: getattr(defaults, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(defaults, f.name)
    }
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    assert not unknown, f"{cls.__name__} has no {sorted(unknown)}"
    return cls(**{**values, **extra, **overrides})


def auth_settings(**overrides: Any) -> AuthSettings:
    settings: AuthSettings = _from_config(AuthSettings, overrides, hostname=HOSTNAME)
    return settings


def throttle_limits(**overrides: Any) -> ThrottleLimits:
    limits: ThrottleLimits = _from_config(ThrottleLimits, overrides)
    return limits
