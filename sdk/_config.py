"""Configuration: profiles, environment and arguments, resolved once.

Precedence, highest first: explicit argument > environment (``ANYTUNE_*``) > profile (project
``anytune.toml``, found from the working directory upwards, or ``ANYTUNE_CONFIG``; then the user
config file) > default.

A profile names a provider, its settings and defaults for the job spec::

    default_profile = "dev"

    [profiles.dev]
    provider = "fake"
    settings = { speed = 2.0 }
    spec = { base_model = "tiny", hyperparameters = { epochs = 2 } }

Secrets are not written in profiles: settings reference them (``api_key_env = "OPENAI_API_KEY"``)
or come from the SDK's own variables.  Secret values that do get resolved are registered for
redaction and masked by :meth:`ResolvedConfig.show`.

Environment variables: ``ANYTUNE_PROFILE``, ``ANYTUNE_PROVIDER``, ``ANYTUNE_HOME``,
``ANYTUNE_CONFIG`` (project file path), ``ANYTUNE_CONFIG_DIR`` (user config dir),
``ANYTUNE_BASE_MODEL``, and ``ANYTUNE_<PROVIDER>_<SETTING>`` for any setting of the chosen provider
(``ANYTUNE_AZURE_OPENAI_ENDPOINT``; dashes become underscores).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from anytune._compat import tomllib
from anytune._home import anytune_home
from anytune._secrets import holds_secret, mask, register_secret
from anytune.errors import ConfigError

if TYPE_CHECKING:
    from anytune._provider import Provider, ProviderSettings

CONFIG_FILENAME = "anytune.toml"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    provider: str
    description: str = ""
    settings: dict[str, Any] = {}
    spec: dict[str, Any] = {}


class ServeSection(BaseModel):
    """``[serve]``: what ``anytune serve`` reads (keys are secrets: masked in every repr and dump)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    api_keys: list[SecretStr] = []


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    default_profile: str | None = None
    profiles: dict[str, Profile] = {}
    serve: ServeSection = ServeSection()


def user_config_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("ANYTUNE_CONFIG_DIR"):
        return Path(env["ANYTUNE_CONFIG_DIR"]).expanduser() / CONFIG_FILENAME
    import platformdirs

    return platformdirs.user_config_path("anytune", appauthor=False) / CONFIG_FILENAME


def project_config_file(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """``ANYTUNE_CONFIG``, else the nearest ``anytune.toml`` from ``cwd`` upwards."""
    env = os.environ if env is None else env
    if env.get("ANYTUNE_CONFIG"):
        path = Path(env["ANYTUNE_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"file {path} does not exist", source="ANYTUNE_CONFIG")
        return path
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _validation_message(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(dotted field, message) of a pydantic ValidationError: the first unknown field, else the first error."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
    loc = f"{prefix}.{loc}".strip(".") if prefix else loc
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return loc, msg + extra


def load_config_file(path: Path) -> ConfigFile:
    """Parse and validate one ``anytune.toml``.

    Raises:
        ConfigError: naming the file, and the line or field at fault.
    """
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=str(path)) from exc
    except UnicodeDecodeError as exc:  # tomllib decodes the bytes itself: not UTF-8 is not TOML
        raise ConfigError(f"invalid TOML: not UTF-8 text (byte {exc.start})", source=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        loc, msg = _validation_message(exc)
        raise ConfigError(msg, field=loc, source=str(path)) from exc


@dataclass(frozen=True)
class ResolvedConfig:
    """The settings in force, and where each came from."""

    provider: str
    profile: str | None
    settings: ProviderSettings
    spec_defaults: dict[str, Any]
    home: Path
    files: list[Path]
    sources: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)

    def show(self) -> dict[str, Any]:
        """JSON-ready view with every secret masked (what ``anytune config show`` prints)."""
        settings: dict[str, Any] = {}
        for name, value in self.settings.model_dump().items():
            if isinstance(value, SecretStr):
                settings[name] = mask(value.get_secret_value())
            elif holds_secret(self.settings, name) and isinstance(value, str):
                settings[name] = mask(value)
            else:
                settings[name] = value
        return {
            "provider": self.provider,
            "profile": self.profile,
            "home": str(self.home),
            "config_files": [str(p) for p in self.files],
            "settings": settings,
            "spec_defaults": self.spec_defaults,
            "sources": self.sources,
            "profiles": {n: p.provider for n, p in sorted(self.profiles.items())},
        }


def _env_value(raw: str) -> Any:
    import orjson

    if raw[:1] in "[{":
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _read_profiles(
    env: Mapping[str, str], cwd: Path | None, sources: dict[str, str]
) -> tuple[list[Path], dict[str, Profile], tuple[str, str] | None]:
    """Profiles of the user file, then the project file (the project's override the user's)."""
    files: list[Path] = []
    profiles: dict[str, Profile] = {}
    default_profile: tuple[str, str] | None = None
    for path in (user_config_file(env), project_config_file(cwd, env)):
        if path is None or not path.is_file():
            continue
        cfg = load_config_file(path)
        files.append(path)
        profiles.update(cfg.profiles)
        for name in cfg.profiles:
            sources[f"profile:{name}"] = str(path)
        if cfg.default_profile:
            default_profile = (cfg.default_profile, str(path))
    return files, profiles, default_profile


def _choose_profile(
    profile: str | None,
    provider: str | None,
    env: Mapping[str, str],
    profiles: Mapping[str, Profile],
    default_profile: tuple[str, str] | None,
    sources: dict[str, str],
) -> tuple[str | None, str | None]:
    """(profile, provider): argument > provider-argument naming a profile > env > file default."""
    chosen: str | None = None
    if profile is not None:
        chosen, sources["profile"] = profile, "argument"
    elif provider is not None and provider in profiles:
        chosen, sources["profile"] = provider, "argument (provider= names a profile)"
        provider = None
    elif env.get("ANYTUNE_PROFILE") and provider is None:
        chosen, sources["profile"] = env["ANYTUNE_PROFILE"], "ANYTUNE_PROFILE"
    elif default_profile and provider is None:
        chosen, sources["profile"] = default_profile[0], f"default_profile in {default_profile[1]}"
    if chosen is not None and chosen not in profiles:
        import difflib

        close = difflib.get_close_matches(chosen, list(profiles), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(profiles)) or "none defined"
        raise ConfigError(
            f"unknown profile {chosen!r}.{hint} Profiles: {known}.",
            field="profile",
            source=sources["profile"],
        )
    return chosen, provider


def _choose_provider(
    provider: str | None, env: Mapping[str, str], prof: Profile | None, chosen: str | None, sources: dict[str, str]
) -> str:
    """Which provider: argument > env > profile."""
    if provider is not None:
        sources["provider"] = "argument"
        return provider
    if env.get("ANYTUNE_PROVIDER"):
        sources["provider"] = "ANYTUNE_PROVIDER"
        return env["ANYTUNE_PROVIDER"]
    if prof is not None:
        sources["provider"] = f"profile {chosen!r}"
        return prof.provider
    raise NoProviderChosenError(
        "no provider chosen: pass provider=..., set ANYTUNE_PROVIDER or ANYTUNE_PROFILE, "
        f"or add a profile to {CONFIG_FILENAME}",
        field="provider",
    )


class NoProviderChosenError(ConfigError):
    """Nothing names a provider (no argument, variable or profile): a fresh install, not a fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.detail = message
        super().__init__(message, field=field)


def _typed_settings(
    cls: type[Provider[Any]],
    name: str,
    prof: Profile | None,
    chosen: str | None,
    settings: Mapping[str, Any] | None,
    env: Mapping[str, str],
    sources: dict[str, str],
) -> ProviderSettings:
    """Settings: defaults < profile (when it is for this provider) < env < argument; secrets registered."""
    merged: dict[str, Any] = {}
    if prof is not None and prof.provider == name:
        merged.update(prof.settings)
        for key in prof.settings:
            sources[f"settings.{key}"] = f"profile {chosen!r}"
    prefix = "ANYTUNE_" + name.upper().replace("-", "_") + "_"
    for key in cls.Settings.model_fields:
        var = prefix + key.upper()
        if var in env:
            merged[key] = _env_value(env[var])
            sources[f"settings.{key}"] = var
    for key, value in (settings or {}).items():
        merged[key] = value
        sources[f"settings.{key}"] = "argument"
    try:
        typed = cls.Settings.model_validate(merged)
    except ValidationError as exc:
        loc, msg = _validation_message(exc, "settings")
        raise ConfigError(msg, field=loc, source=sources.get(loc, f"provider {name!r}")) from None
    for key, value in typed.model_dump().items():
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif holds_secret(typed, key) and isinstance(value, str):
            register_secret(value)
    return typed


def resolve(
    *,
    provider: str | None = None,
    profile: str | None = None,
    settings: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    provider_class: type[Provider[Any]] | None = None,
) -> ResolvedConfig:
    """Resolve provider, settings and spec defaults.

    Args:
        provider: a provider name, or the name of a profile.
        profile: a profile name (wins over ``ANYTUNE_PROFILE`` and ``default_profile``).
        settings: provider settings given explicitly; they win over everything else.
        env: environment to read (default ``os.environ``).
        cwd: where to look for the project ``anytune.toml`` (default: the working directory).
        provider_class: the provider's class when the caller already has it (an instance passed
            to ``FineTuneJob``); otherwise the registry finds it by name.

    Raises:
        ConfigError: bad file, unknown profile, no provider, or settings the provider rejects.
        UnknownProviderError: the provider is not registered.
    """
    from anytune import _registry

    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    files, profiles, default_profile = _read_profiles(env, cwd, sources)
    chosen, provider = _choose_profile(profile, provider, env, profiles, default_profile, sources)
    prof = profiles[chosen] if chosen is not None else None
    name = _choose_provider(provider, env, prof, chosen, sources)
    cls = provider_class if provider_class is not None else _registry.provider_class(_registry.entry(name))
    typed = _typed_settings(cls, name, prof, chosen, settings, env, sources)

    spec_defaults: dict[str, Any] = dict(prof.spec) if prof is not None and prof.provider == name else {}
    if env.get("ANYTUNE_BASE_MODEL"):
        spec_defaults["base_model"] = env["ANYTUNE_BASE_MODEL"]
        sources["spec.base_model"] = "ANYTUNE_BASE_MODEL"
    home = anytune_home(env)
    sources["home"] = "ANYTUNE_HOME" if env.get("ANYTUNE_HOME") else "default (user data dir)"
    return ResolvedConfig(
        provider=name,
        profile=chosen,
        settings=typed,
        spec_defaults=spec_defaults,
        home=home,
        files=files,
        sources=sources,
        profiles=profiles,
    )


# -- what ``anytune config show`` reports, whatever the state of the configuration ----------------


def config_search(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[dict[str, Any]]:
    """Every place a config file is looked for, whether one is there, and its error if it is broken.

    Never raises: a broken file is reported in its entry (``error``).
    """
    env = os.environ if env is None else env
    entries: list[dict[str, Any]] = []
    user = user_config_file(env)
    via = "ANYTUNE_CONFIG_DIR" if env.get("ANYTUNE_CONFIG_DIR") else "the user config dir"
    entries.append({"kind": "user", "path": str(user), "via": via, "found": user.is_file()})
    if env.get("ANYTUNE_CONFIG"):
        path = Path(env["ANYTUNE_CONFIG"]).expanduser()
        entries.append({"kind": "project", "path": str(path), "via": "ANYTUNE_CONFIG", "found": path.is_file()})
        if not path.is_file():
            entries[-1]["error"] = "file does not exist"
    else:
        here = (cwd or Path.cwd()).resolve()
        found = next((f / CONFIG_FILENAME for f in (here, *here.parents) if (f / CONFIG_FILENAME).is_file()), None)
        where = found or here / CONFIG_FILENAME
        via = "the working directory and each folder above it"
        entries.append({"kind": "project", "path": str(where), "via": via, "found": found is not None})
    for entry in entries:
        if entry["found"]:
            try:
                load_config_file(Path(entry["path"]))
            except ConfigError as exc:
                entry["error"] = exc.message
    return entries


def hint(secret: str) -> str:
    """A secret as ``sk-…abcd``: enough to tell which key is in force, too little to use it.

    Short values (under 16 characters) show nothing of themselves.
    """
    if len(secret) < 16:
        return mask(secret)
    return f"{secret[:3]}…{secret[-4:]}"


@dataclass(frozen=True)
class _CredentialSource:
    """Where a provider's credential is found: a setting, a setting naming a variable, the SDK's
    variable, and what it falls back to when none is set."""

    provider: str
    setting: str | None
    env_setting: str | None
    variable: str | None
    fallback: str


#: One row per built-in provider that needs a credential (fake and local need none).
CREDENTIAL_SOURCES: tuple[_CredentialSource, ...] = (
    _CredentialSource("openai", "api_key", "api_key_env", "OPENAI_API_KEY", ""),
    _CredentialSource(
        "azure-openai",
        "api_key",
        "api_key_env",
        "AZURE_OPENAI_API_KEY",
        "Entra ID sign-in (azure-identity: az login, managed identity, AZURE_CLIENT_* variables), tried when used",
    ),
    _CredentialSource("huggingface", "token", "token_env", "HF_TOKEN", "the cached login of `hf auth login`"),
    _CredentialSource(
        "azureml",
        None,
        None,
        None,
        "Entra ID sign-in (azure-identity, the 'identity' setting: az login, managed identity, "
        "AZURE_CLIENT_* variables), tried when used",
    ),
)


def _raw_settings(provider: str, profiles: Mapping[str, Profile], env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """(value, source) of a provider's settings from every profile for it, then ``ANYTUNE_<P>_*``."""
    found: dict[str, tuple[Any, str]] = {}
    for name, prof in sorted(profiles.items()):
        if prof.provider == provider:
            for key, value in prof.settings.items():
                found.setdefault(key, (value, f"profile {name!r}"))
    prefix = "ANYTUNE_" + provider.upper().replace("-", "_") + "_"
    for var, value in env.items():
        if var.startswith(prefix):
            found[var[len(prefix) :].lower()] = (value, var)
    return found


def _hf_cached_token(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(token, path) of huggingface_hub's cached login, read without importing it."""
    if env.get("HF_TOKEN_PATH"):
        path = Path(env["HF_TOKEN_PATH"]).expanduser()
    else:
        cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = Path(env["HF_HOME"]).expanduser() / "token" if env.get("HF_HOME") else cache / "huggingface" / "token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return (token, str(path)) if token else None


def _credential(
    row: _CredentialSource, settings: Mapping[str, tuple[Any, str]], env: Mapping[str, str]
) -> dict[str, Any]:
    """Whether ``row``'s credential is found here, where, and its masked hint (registered for redaction)."""
    value: str | None = None
    source = ""
    if row.setting and row.setting in settings and str(settings[row.setting][0] or ""):
        value, source = str(settings[row.setting][0]), f"settings.{row.setting} ({settings[row.setting][1]})"
    elif row.env_setting and row.env_setting in settings:
        variable, origin = str(settings[row.env_setting][0]), settings[row.env_setting][1]
        value, source = env.get(variable) or None, f"{variable} (named by {row.env_setting}, {origin})"
    elif row.variable:
        value, source = env.get(row.variable) or None, row.variable
    if not value and row.provider == "huggingface":
        cached = _hf_cached_token(env)
        if cached is not None:
            value, source = cached[0], f"cached login {cached[1]}"
    if value:
        register_secret(value)
        return {"provider": row.provider, "found": True, "source": source, "value": hint(value)}
    parts = [f"{source} is not set"] if source else []
    if row.fallback:
        parts.append(("otherwise " if parts else "") + row.fallback)
    return {"provider": row.provider, "found": False, "source": "; ".join(parts)}


def credentials_report(profiles: Mapping[str, Profile], env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """For each provider that needs a credential: whether one is found here, where, masked."""
    env = os.environ if env is None else env
    return [_credential(row, _raw_settings(row.provider, profiles, env), env) for row in CREDENTIAL_SOURCES]


def diagnose(
    *,
    provider: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[dict[str, Any], ConfigError | None]:
    """Everything ``anytune config show`` prints, and the configuration error if there is one.

    Never raises a :class:`ConfigError`: what cannot be resolved is reported (``error``) next to
    what can (the files searched, the home, each provider's credentials). No provider chosen at all
    is not an error (a fresh install); a broken file, an unknown profile or a bad setting is.
    """
    env = os.environ if env is None else env
    view: dict[str, Any] = {
        "provider": None,
        "profile": None,
        "home": str(anytune_home(env)),
        "config_files": [],
        "settings": {},
        "spec_defaults": {},
        "sources": {"home": "ANYTUNE_HOME" if env.get("ANYTUNE_HOME") else "default (user data dir)"},
        "profiles": {},
    }
    error: ConfigError | None = None
    try:
        view.update(resolve(provider=provider, profile=profile, env=env, cwd=cwd).show())
    except NoProviderChosenError as exc:
        view["note"] = exc.detail
    except ConfigError as exc:
        error = exc
    searched = config_search(env, cwd)
    profiles: dict[str, Profile] = {}
    for entry in searched:  # user file first: the project's profiles override its own
        if entry["found"] and "error" not in entry:
            profiles.update(load_config_file(Path(entry["path"])).profiles)
    view["profiles"] = {n: p.provider for n, p in sorted(profiles.items())}
    view["searched"] = searched
    view["credentials"] = credentials_report(profiles, env)
    view["error"] = error.message if error is not None else None
    return view, error
