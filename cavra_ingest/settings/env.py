"""Settings from the environment: CAVRA_<NAME> variables (or CAVRA_<NAME>_FILE), then flag overrides."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

# Old names still read, with a warning: they sat side by side with opposite meanings.
ALIASES = {"CAVRA_MAX_BATCH_RECORDS": "request_max_records", "CAVRA_BATCH_MAX_RECORDS": "commit_max_records"}
log = logging.getLogger("cavra_ingest.settings")
# CAVRA_* variables that are not settings of the server but are read elsewhere (tests, tools).
OTHER_VARIABLES = frozenset(
    {
        "CAVRA_TEST_POSTGRES_URL",
        "CAVRA_REQUIRE_SERVICES",
        "CAVRA_FAULT_ROUNDS",
        "CAVRA_FAULT_SEED",
        "CAVRA_PARTITION_ROUNDS",
        "CAVRA_POWERLOSS_ROUNDS",
        "CAVRA_FUZZ_EXAMPLES",
        "CAVRA_BURST_REQUESTS",
        "CAVRA_CHROMIUM",
        "CAVRA_SCREENSHOTS",
        # The client and `send` read these.
        "CAVRA_TOKEN",
        "CAVRA_URL",
    }
)
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Spec:
    """One declared setting: where it sits (`group.name`), its variable and what the declaration says of it."""

    group: str
    name: str
    env: str
    default: Any
    type: str
    help: str
    zero: bool
    choices: tuple[str, ...]
    check: Any

    @property
    def key(self) -> str:
        """The flat name flags and `Settings.of` use: the variable without `CAVRA_`, in lower case."""
        return self.env.removeprefix("CAVRA_").lower()


class SettingsError(ValueError):
    """One or more settings are invalid; each problem is one line naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start, by group; CLI flags override the environment."""

    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    writer: WriterSettings = field(default_factory=WriterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    sinks: SinkSettings = field(default_factory=SinkSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Build settings from flat names (`port=9000`, `activity_db=...`): each goes to its group."""
        return cls().replace(**values)

    def replace(self, **values: Any) -> Settings:
        """Return a copy with these flat-named settings changed."""
        changes: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            spec = BY_KEY.get(key)
            if spec is None:
                raise TypeError(f"{key!r} is not a setting")
            changes.setdefault(spec.group, {})[spec.name] = value
        groups = {group: dataclasses.replace(getattr(self, group), **fields) for group, fields in changes.items()}
        return dataclasses.replace(self, **groups)

    def value(self, spec: Spec) -> Any:
        return getattr(getattr(self, spec.group), spec.name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from CAVRA_<NAME> variables, then apply non-None overrides; SettingsError lists problems."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        for alias, key in ALIASES.items():
            if env.get(alias) and not env.get(BY_KEY[key].env):
                log.warning("%s is deprecated: use %s", alias, BY_KEY[key].env)
        for spec in SPECS:
            variable = spec.env
            raw = env.get(variable)
            if not raw and env.get(variable + "_FILE"):
                # Docker and Kubernetes secrets: the value is in a file, never in the environment.
                variable += "_FILE"
                try:
                    raw = Path(env[variable]).read_text().strip()
                except OSError as exc:
                    problems.append(f"{variable}: cannot read {env[variable]!r}: {exc.strerror}")
                    continue
            if not raw:
                aliases = [alias for alias, key in ALIASES.items() if key == spec.key and env.get(alias)]
                if aliases:
                    variable, raw = aliases[0], env[aliases[0]]
            if raw is None or raw == "":
                continue
            try:
                values[spec.key] = parse(spec.default, raw)
            except ValueError as exc:
                problems.append(f"{variable}: {exc}, got {raw!r}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        problems.extend(check(values))
        if problems:
            raise SettingsError(problems)
        return cls.of(**values)


# Each group's name and class, in the order `Settings` declares them: the one list of groups.
GROUPS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Settings)}  # type: ignore[misc]


def _specs() -> tuple[Spec, ...]:
    specs = []
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            env = meta["env"] or f"CAVRA_{f.name.upper()}"
            specs.append(Spec(group, f.name, env, f.default, str(f.type), meta["help"], meta["zero"],
                              meta["choices"], meta["check"]))  # fmt: skip
    return tuple(specs)


SPECS = _specs()
BY_KEY = {spec.key: spec for spec in SPECS}


def variable_names() -> dict[str, str]:
    """Map each setting's flat name to its CAVRA_* variable."""
    return {spec.key: spec.env for spec in SPECS}


def parse(default: object, raw: str) -> object:
    """Convert a variable's text to its setting's type, or raise ValueError saying what was expected."""
    if isinstance(default, bool):
        if raw.lower() in TRUE | FALSE:
            return raw.lower() in TRUE
        raise ValueError("expected one of 1, 0, true, false, yes, no, on, off")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return raw


def check(values: Mapping[str, object]) -> list[str]:
    """Return one line per value out of its range, naming its variable."""
    problems: list[str] = []
    for key, value in values.items():
        spec = BY_KEY[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0 or (value == 0 and not spec.zero):
                kind = "non-negative" if spec.zero else "positive"
                problems.append(f"{spec.env}: expected a {kind} number, got {value!r}")
                continue
        if spec.choices and value is not None and str(value).upper() not in {c.upper() for c in spec.choices}:
            problems.append(f"{spec.env}: expected one of {', '.join(spec.choices)}, got {value!r}")
        if spec.check is not None and value is not None and (problem := spec.check(value)) is not None:
            problems.append(f"{spec.env}: {problem}")
    return problems


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Describe each CAVRA_* variable that nothing reads, with the closest valid name."""
    env = os.environ if environ is None else environ
    names = {spec.env for spec in SPECS}
    known = names | set(ALIASES) | OTHER_VARIABLES | {name + "_FILE" for name in names}
    found = []
    for variable in sorted(name for name in env if name.startswith("CAVRA_") and name not in known):
        close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        found.append(f"{variable} is not a cavra-ingest setting and is ignored{hint}")
    return found
