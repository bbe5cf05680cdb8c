"""examples/header-nginx is consistent: nginx accepts its config, the hub config builds a
working HeaderAuthenticator (and none without the shared secret), and the docs show the
identity and secret snippets the tests run."""

import re
import shutil
import subprocess

import pytest
from traitlets.config import PyFileConfigLoader

from headerauthenticator import HeaderAuthenticator, JSONParser
from tests.fixtures.nginx import NGINX
from tests.integration.test_header_nginx import IDENTITY_SNIPPET, REPO, SECRET_PATHS_SNIPPET

EXAMPLE = REPO / "examples" / "header-nginx"


def test_docs_show_the_tested_nginx_snippets():
    docs = (REPO / "docs" / "deploy-behind-proxy.md").read_text()
    assert IDENTITY_SNIPPET.read_text().strip() in docs
    assert SECRET_PATHS_SNIPPET.read_text().strip() in docs
    assert (EXAMPLE / "hub-spawn-pacing.conf").read_text().strip() in docs


def test_docs_apache_snippet_sets_env_headers_only_when_the_variable_exists():
    """Apache's ``%{NAME}e`` of an unset variable is the text "(null)": every header the snippet
    sets from an environment variable must carry the condition ``env=NAME``."""
    docs = (REPO / "docs" / "deploy-behind-proxy.md").read_text()
    [apache] = re.findall(r"```apache\n(.*?)```", docs, flags=re.S)
    sets = [line.strip() for line in apache.splitlines() if line.strip().startswith("RequestHeader set")]
    from_env = [line for line in sets if re.search(r"%\{\w+\}e", line)]
    assert from_env, "the snippet no longer sets a header from an environment variable"
    for line in from_env:
        names = re.findall(r"%\{(\w+)\}e", line)
        assert all(line.endswith(f"env={name}") for name in names), line


def test_example_nginx_config_is_valid(tmp_path):
    prefix = tmp_path / "nginx"
    shutil.copytree(EXAMPLE, prefix)
    (prefix / "hub-secret.conf").write_text('set $hub_proxy_secret "0123456789abcdef";\n')
    (prefix / "htpasswd").write_text("alice:{PLAIN}alice-password\n")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True)
    result = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", "nginx.conf"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_example_hub_config_needs_the_shared_secret(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_HEADER_AUTH_SECRET", raising=False)
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(EXAMPLE)).load_config()
    with pytest.raises(ValueError, match="shared_secret is not set"):
        HeaderAuthenticator(config=config)


def test_example_hub_config_builds_the_authenticator(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_HEADER_AUTH_SECRET", "0123456789abcdef")
    loader = PyFileConfigLoader("jupyterhub_config.py", path=str(EXAMPLE))
    config = loader.load_config()
    assert config.JupyterHub.authenticator_class == "header"
    auth = HeaderAuthenticator(config=config)
    assert auth.trusted_proxy_ips == ["127.0.0.2"]
    assert isinstance(auth.header_parsers["data"], JSONParser)
    assert auth.shared_secret == "0123456789abcdef"
