"""Configurers prepare a created machine for a notebook server (contract: :mod:`.base`)."""

from .ansible import AnsibleConfigurer
from .base import ConfigureResult, Configurer, ConfigurerError

__all__ = ["AnsibleConfigurer", "ConfigureResult", "Configurer", "ConfigurerError"]
