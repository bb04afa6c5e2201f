"""The device listener keys (docs/devices.md): defaults, profile = "device", validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpgate.config import ConfigError, load_config
from smtpgate.config.schema import DEVICE_PROFILE, ListenerConfig


def load(tmp_path: Path, listener: str, extra: str = "") -> ListenerConfig:
    path = tmp_path / "smtpgate.toml"
    path.write_text(f'{extra}\n[[listener]]\naddress = "127.0.0.1:2525"\n{listener}\n')
    (only,) = load_config(path, environ={}).listeners
    return only


def error(tmp_path: Path, listener: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, listener)
    return str(info.value)


def test_a_plain_listener_keeps_every_safe_default(tmp_path: Path) -> None:
    lst = load(tmp_path, "")
    assert (lst.profile, lst.min_tls, lst.tls_ciphers) == ("", "1.2", "")
    assert not (lst.advertise_auth_equals or lst.auth_after_helo or lst.offer_cram_md5)
    assert (lst.bare_lf, lst.eight_bit, lst.trusted_networks) == ("reject", "reject", ())
    path = tmp_path / "smtpgate.toml"
    path.write_text("")
    assert load_config(path, environ={}).submission.add_missing_headers is True


def test_device_profile_sets_the_bundle(tmp_path: Path) -> None:
    lst = load(tmp_path, 'profile = "device"')
    assert lst.profile == "device"
    assert (lst.min_tls, lst.tls_ciphers) == ("1.0", "DEFAULT@SECLEVEL=0")
    assert lst.advertise_auth_equals and lst.auth_after_helo and lst.offer_cram_md5
    assert (lst.bare_lf, lst.eight_bit) == ("normalize", "accept")
    assert lst.trusted_networks == ()  # trust is never part of a bundle
    assert {k: getattr(lst, k) for k in DEVICE_PROFILE} == DEVICE_PROFILE


def test_a_key_set_on_the_listener_wins_over_the_profile(tmp_path: Path) -> None:
    lst = load(tmp_path, 'profile = "device"\nmin_tls = "1.2"\ntls_ciphers = ""\n'
                         'bare_lf = "reject"\nauth_after_helo = false')
    assert (lst.min_tls, lst.tls_ciphers, lst.bare_lf) == ("1.2", "", "reject")
    assert lst.auth_after_helo is False
    assert lst.advertise_auth_equals is True and lst.eight_bit == "accept"  # the rest stays


def test_each_switch_alone_on_a_normal_listener(tmp_path: Path) -> None:
    lst = load(tmp_path, 'min_tls = "1.1"\nadvertise_auth_equals = true\n'
                         'trusted_networks = ["192.0.2.0/24", "2001:db8::/32", "127.0.0.2/32"]')
    assert lst.min_tls == "1.1" and lst.advertise_auth_equals
    assert not lst.auth_after_helo and lst.bare_lf == "reject" and not lst.offer_cram_md5
    assert lst.trusted_networks == ("192.0.2.0/24", "2001:db8::/32", "127.0.0.2/32")


@pytest.mark.parametrize(
    ("listener", "key", "reason"),
    [
        ('profile = "printer"', "listener[1].profile", 'must be one of "", device, got "printer"'),
        ('min_tls = "1"', "listener[1].min_tls", "must be one of 1.0, 1.1, 1.2, 1.3"),
        ("min_tls = 1.0", "listener[1].min_tls", "must be one of"),
        ('bare_lf = "accept"', "listener[1].bare_lf", "must be one of reject, normalize"),
        ('eight_bit = "yes"', "listener[1].eight_bit", "must be one of reject, accept"),
        ("tls_ciphers = 3", "listener[1].tls_ciphers", "expected a string"),
        ('auth_after_helo = "yes"', "listener[1].auth_after_helo", "expected true or false"),
        ('trusted_networks = "10.0.0.0/8"', "listener[1].trusted_networks", "expected an array"),
        ('trusted_networks = ["10.0.0.300/8"]', "listener[1].trusted_networks", "not a network"),
        ('trusted_networks = ["10.1.2.3/8"]', "listener[1].trusted_networks", "host bits set"),
        ('trusted_networks = ["0.0.0.0/0"]', "listener[1].trusted_networks", "open relay"),
        ('trusted_networks = ["::/0"]', "listener[1].trusted_networks", "open relay"),
        ("offer_cram_md5 = true", "listener[1].offer_cram_md5", "unknown key"),
    ],
)
def test_listener_key_errors_name_the_key(
    tmp_path: Path, listener: str, key: str, reason: str
) -> None:
    message = error(tmp_path, listener)
    assert f": {key}: " in message and reason in message, message


def test_submission_section(tmp_path: Path) -> None:
    path = tmp_path / "smtpgate.toml"
    path.write_text("[submission]\nadd_missing_headers = false\n")
    assert load_config(path, environ={}).submission.add_missing_headers is False
    path.write_text("[submission]\nadd_headers = false\n")
    with pytest.raises(ConfigError, match=r"submission\.add_headers: unknown key"):
        load_config(path, environ={})
