"""examples/ldap/jupyterhub_config.py follows docs/deploy-behind-proxy.md: the hub listens on
loopback, trusts only the front proxy's own address, its authenticator does not start without
the shared secret, and its LDAP options load."""

import ipaddress
import logging
from pathlib import Path

import pytest
from traitlets.config import PyFileConfigLoader

from headerauthenticator import HeaderAuthenticator
from ldap_hooks import LDAP, setup_ldap_entry_hook

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ldap"
SECRET = "JUPYTERHUB_HEADER_AUTH_SECRET"


def load():
    return PyFileConfigLoader("jupyterhub_config.py", path=str(EXAMPLE)).load_config()


def test_example_refuses_to_start_without_the_shared_secret(monkeypatch):
    monkeypatch.delenv(SECRET, raising=False)
    with pytest.raises(ValueError, match=SECRET):
        HeaderAuthenticator(config=load())


def test_example_trusts_only_the_front_proxy_with_the_secret(monkeypatch, caplog):
    monkeypatch.setenv(SECRET, "0123456789abcdef")
    config = load()
    assert config.JupyterHub.authenticator_class == "header"
    assert ipaddress.ip_address(config.JupyterHub.bind_url.split("//")[1].split(":")[0]).is_loopback
    with caplog.at_level(logging.WARNING):
        auth = HeaderAuthenticator(config=config)
    assert auth.shared_secret == "0123456789abcdef"
    # 127.0.0.1 is where every local process (and the hub's own proxy) connects from
    assert "127.0.0.1" not in auth.trusted_proxy_ips
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert set(auth.allowed_headers.values()) == {"Remote-User", "X-Certificate-Subject"}
    assert auth.enable_auth_state


def test_example_ldap_options_load(monkeypatch):
    monkeypatch.setenv(SECRET, "0123456789abcdef")
    config = load()
    ldap = LDAP(config=config)
    assert ldap.submit_spawner_attribute == "auth_state.X-Certificate-Subject"
    assert config.Spawner.pre_spawn_hook is setup_ldap_entry_hook
