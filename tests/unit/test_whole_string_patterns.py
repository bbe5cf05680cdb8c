"""Names checked by a pattern are checked whole: ``$`` matches before a trailing newline, so
``"name\\n"`` passed checks written with it (as the template name ``"evil\\n"`` once did)."""

import pytest
from traitlets import TraitError

from cloudsshspawner.spawner import check_loopback_args
from ldap_hooks.config import check_attribute_name
from multiplespawner.providers.libvirt import LibvirtProvider
from multiplespawner.providers.base import ProviderError


def test_libvirt_machine_names():
    provider = LibvirtProvider(uri="test:///default", storage_dir="/nonexistent")
    assert provider._machine_dir("vm-1").name == "vm-1"
    with pytest.raises(ProviderError, match="invalid machine name"):
        provider._machine_dir("vm-1\n")


def test_ldap_attribute_names():
    assert check_attribute_name("uidNumber", "uid_attribute") == "uidNumber"
    with pytest.raises(TraitError, match="not an LDAP attribute name"):
        check_attribute_name("uidNumber\n", "uid_attribute")


@pytest.mark.parametrize("args", [["--ip=0.0.0.0\n"], ["--ip=127.0.0.1\n0.0.0.0"], ["--ServerApp.ip=127.0.0.1\n"]])
def test_notebook_ip_arguments_with_a_newline_are_refused(args):
    with pytest.raises(ValueError, match="must listen on 127.0.0.1 only"):
        check_loopback_args(args)


def test_loopback_ip_argument_is_accepted():
    check_loopback_args(["--ip=127.0.0.1", "--ServerApp.ip", "127.0.0.1"])
