"""Reading the settings: the TOML file (or the embedded default), then MAILSVC_* environment
overrides, each value coerced to its field's type, then ``validate``."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailsvc import resources
from mailsvc.config.check import validate
from mailsvc.config.settings import DkimSelector, Settings
from mailsvc.errors import ConfigError

ENV_PREFIX = "MAILSVC_"
# Variables with the prefix that are not settings: the file to read, and the event loop choice
# (mailsvc.eventloop reads it before any settings exist).
OTHER_ENV = frozenset({"MAILSVC_CONFIG", "MAILSVC_EVENT_LOOP"})
# The checkout's config/mailsvc.toml, or the copy shipped in the installed package.
DEFAULT_CONFIG = resources.config_dir() / "mailsvc.toml"

_TOP_LEVEL = {
    "domain",
    "var_dir",
    "language",
    "office_address",
    "source",
    "committees",
    "notice_rules",
}
_SECTIONS = {f.name for f in dataclasses.fields(Settings)} - _TOP_LEVEL
_NOT_KEYS = ("source", "committees", "notice_rules")
# Keys that moved: a file that still has one is told where it went.
_MOVED = {"dns.mta_sts_mode": "mta_sts.mode"}
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def _describe(tp: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(
        tp, "a path" if tp is Path else str(tp)
    )


def _coerce(key: str, raw: Any, tp: Any, *, from_env: bool) -> Any:
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            if from_env and str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int):
                return raw
            if from_env:
                return int(str(raw).strip())
            raise ValueError
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, (int, float)):
                return float(raw)
            if from_env:
                return float(str(raw).strip())
            raise ValueError
        if tp is Path:
            if not isinstance(raw, str) or not raw:
                raise ValueError
            return Path(raw)
        if tp is str:
            if not isinstance(raw, str):
                raise ValueError
            return raw
    except ValueError:
        pass
    raise ConfigError(f"{key} = {raw!r}: expected {_describe(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, types.UnionType):  # Path | None
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        out[f.name] = tp
    return out


def _build(cls: type, prefix: str, values: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    kwargs: dict[str, Any] = {}
    types_ = _field_types(cls)
    for key in values:
        if f"{prefix}{key}" in _MOVED:
            raise ConfigError(f"{prefix}{key}: moved to {_MOVED[prefix + key]}")
        if key not in types_ or (prefix == "" and key in _NOT_KEYS):
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            raise ConfigError(f"{prefix}{key}: unknown key in {where}")
    for name, tp in types_.items():
        if prefix == "" and (name in _SECTIONS or name in _NOT_KEYS):
            continue
        if typing.get_origin(tp) is tuple:  # a list of tables: read by its own function
            continue
        dotted = f"{prefix}{name}"
        env_name = _env_name(dotted)
        if env_name in env:
            kwargs[name] = _coerce(f"{dotted} (from {env_name})", env[env_name], tp, from_env=True)
        elif name in values:
            kwargs[name] = _coerce(dotted, values[name], tp, from_env=False)
    return cls(**kwargs)


def _committees(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise ConfigError('committees: expected a [committees] section of slug = "name"')
    out = []
    for slug, name in raw.items():
        if not _SLUG.match(slug):
            raise ConfigError(f"committees.{slug}: expected a slug of a-z, 0-9 and single hyphens")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"committees.{slug} = {name!r}: expected the committee's name")
        out.append((slug, name.strip()))
    return tuple(out)


def _notice_rules(raw: Any) -> tuple[Any, ...]:
    from mailsvc.domain.notice import parse_rules

    if not isinstance(raw, dict):
        raise ConfigError("notice: expected a [notice] section")
    try:
        return tuple(parse_rules(raw))
    except ValueError as exc:
        message = str(exc) if str(exc).startswith("notice") else f"notice.{exc}"
        raise ConfigError(message) from None


def _selector(where: str, raw: Any) -> DkimSelector:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table with name, algorithm and key_file")
    unknown = set(raw) - {"name", "algorithm", "key_file"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key in a DKIM selector")
    values = {k: _coerce(f"{where}.{k}", v, str, from_env=False) for k, v in raw.items()}
    if "name" not in values:
        raise ConfigError(f"{where}: expected a name (the selector)")
    return DkimSelector(**values)


def _dkim_selectors(raw: Any, env: Mapping[str, str]) -> tuple[DkimSelector, ...]:
    """[[dkim.selectors]] tables, or MAILSVC_DKIM__SELECTORS="name:algorithm[:key_file],..."."""
    env_name = ENV_PREFIX + "DKIM__SELECTORS"
    if env_name in env:
        selectors = []
        for item in filter(None, (i.strip() for i in env[env_name].split(","))):
            name, _, rest = item.partition(":")
            algorithm, _, key_file = rest.partition(":")
            fields = {"name": name, "algorithm": algorithm or "rsa-sha256", "key_file": key_file}
            selectors.append(_selector(f"dkim.selectors (from {env_name})", fields))
        return tuple(selectors)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("dkim.selectors: expected [[dkim.selectors]] tables")
    return tuple(_selector(f"dkim.selectors[{i}]", item) for i, item in enumerate(raw))


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.upper().replace(".", "__")


def known_env_names() -> frozenset[str]:
    """Every MAILSVC_* variable the loader reads: one per setting, and OTHER_ENV."""
    names = set(OTHER_ENV)
    for name, tp in _field_types(Settings).items():
        if name in _SECTIONS:
            names.update(_env_name(f"{name}.{key}") for key in _field_types(tp))
        elif name not in _NOT_KEYS:
            names.add(_env_name(name))
    return frozenset(names)


def _check_env_names(env: Mapping[str, str]) -> None:
    """A misspelt variable would otherwise be ignored without a word, leaving the setting it
    meant at its file value."""
    known = known_env_names()
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{name}: unknown environment variable (no such setting){hint}")


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings once: file (or the embedded default), then environment overrides."""
    env = os.environ if env is None else env
    _check_env_names(env)
    chosen = Path(path) if path else Path(env.get("MAILSVC_CONFIG") or DEFAULT_CONFIG)
    try:
        with chosen.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {chosen}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {chosen}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"config file {chosen}: cannot be read ({exc.strerror})") from None

    section_types = _field_types(Settings)
    sections: dict[str, Any] = {}
    top: dict[str, Any] = {}
    committees = _committees(data.pop("committees", {}))
    notice_rules = _notice_rules(data.pop("notice", {}))
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a [{key}] section")
        else:
            top[key] = value
    for name in _SECTIONS:
        sections[name] = _build(section_types[name], f"{name}.", data.get(name, {}), env)
    sections["dkim"] = dataclasses.replace(
        sections["dkim"], selectors=_dkim_selectors(data.get("dkim", {}).get("selectors"), env)
    )
    base: Settings = _build(Settings, "", top, env)
    settings = dataclasses.replace(
        base, source=chosen, committees=committees, notice_rules=notice_rules, **sections
    )
    settings = dataclasses.replace(settings, var_dir=settings.var_dir.absolute())
    validate(settings)
    return settings
