"""Runtime settings in groups, read once from CAVRA_* variables (docs/configuration.md lists them).

Owns the declaration (`groups.py`), its checks and the reading of the environment.

Imports: nothing of the project. Every other package may import it.
"""

from __future__ import annotations

from cavra_ingest.settings.checks import redact_url
from cavra_ingest.settings.env import ALIASES, SPECS, Settings, SettingsError, Spec, unknown_variables, variable_names
from cavra_ingest.settings.groups import (
    AuditSettings,
    AuthSettings,
    BrokerSettings,
    ConsoleSettings,
    LimitSettings,
    OidcSettings,
    ServerSettings,
    SinkSettings,
    StoreSettings,
    WriterSettings,
)

__all__ = [
    "ALIASES",
    "SPECS",
    "AuditSettings",
    "AuthSettings",
    "BrokerSettings",
    "ConsoleSettings",
    "OidcSettings",
    "LimitSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "SinkSettings",
    "Spec",
    "StoreSettings",
    "WriterSettings",
    "redact_url",
    "unknown_variables",
    "variable_names",
]
