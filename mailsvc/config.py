"""Typed, frozen settings from a TOML file plus MAILSVC_* environment overrides.

The embedded default is ``config/mailsvc.toml``. ``--config FILE`` or ``MAILSVC_CONFIG`` selects
another file. ``MAILSVC_<SECTION>__<KEY>`` overrides a key inside a section and ``MAILSVC_<KEY>``
a top-level key. Every problem is reported as one :class:`ConfigError` line naming the key, the
value and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsvc.errors import ConfigError

ENV_PREFIX = "MAILSVC_"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PACKAGE_ROOT / "config" / "mailsvc.toml"

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}$"
)
_DN = re.compile(r"^[A-Za-z][\w-]*=.+")


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = ""
    max_message_size: int = 26214400
    max_recipients: int = 100
    # STARTTLS: PEM files; empty means no STARTTLS; "auto" makes a self-signed pair in var_dir.
    tls_cert: str = ""
    tls_key: str = ""
    max_connections: int = 200
    max_connections_per_ip: int = 20
    max_messages_per_ip_per_minute: int = 120
    # Seconds a client may stay silent (command or data) before the connection is closed.
    timeout: float = 300.0
    # Unrecognised or out-of-sequence commands before the connection is closed.
    max_bad_commands: int = 10
    # Seconds a directory answer about a recipient is reused.
    directory_cache_seconds: float = 30.0
    # SPF, DKIM and DMARC checks for an Authentication-Results header, within a time budget.
    authentication_checks: bool = True
    authentication_budget: float = 1.0
    # DNS server for those checks as host or host:port; empty means /etc/resolv.conf.
    dns_resolver: str = ""


@dataclass(frozen=True)
class SubmissionSettings:
    """Councillors sending replies: STARTTLS + AUTH against the directory."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2587
    # Allow AUTH without TLS (only for loopback test setups).
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class SmarthostSettings:
    """Where mail for other domains goes (acknowledgements, bounces, councillors' replies).

    port 0 means the local capture: a sink inside `mailsvc serve` that stores each message as a
    file under <var_dir>/capture/ (the embedded default; nothing leaves the machine).
    """

    host: str = "127.0.0.1"
    port: int = 0
    security: str = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 60.0
    # Concurrent connections to the smarthost.
    workers: int = 2
    # PEM bundle to verify the smarthost's certificate; empty means the system's CAs.
    ca_file: str = ""
    # Days the local capture keeps each file (by modification time); 0 keeps them forever.
    capture_retention_days: int = 14


@dataclass(frozen=True)
class RelaySettings:
    # Tell residents their message reached the councillor's mailbox (RFC 3834 auto-reply).
    acknowledge: bool = True
    # Days the relay log (metadata only, no bodies) is kept.
    log_retention_days: int = 90
    # From address of acknowledgements; empty means noreply@<domain>.
    acknowledge_from: str = ""


@dataclass(frozen=True)
class StackSettings:
    host: str = "127.0.0.1"
    ldap_port: int = 3389
    imap_port: int = 1143
    lmtp_port: int = 2424
    slapd: str = "/usr/sbin/slapd"
    slaptest: str = "/usr/sbin/slaptest"
    slapadd: str = "/usr/sbin/slapadd"
    dovecot: str = "/usr/sbin/dovecot"
    start_timeout: float = 20.0


@dataclass(frozen=True)
class DirectorySettings:
    url: str = ""
    base_dn: str = "dc=rada,dc=miasto,dc=example"
    admin_dn: str = "cn=admin,dc=rada,dc=miasto,dc=example"
    admin_password: str = field(default="", repr=False)
    reader_dn: str = "cn=mailstore,dc=rada,dc=miasto,dc=example"
    reader_password: str = field(default="", repr=False)
    councillors_rdn: str = "ou=councillors"
    person_object_class: str = "inetOrgPerson"
    mail_attribute: str = "mail"
    status_attribute: str = "employeeType"
    disabled_value: str = "disabled"
    active_value: str = "active"
    external_id_attribute: str = "employeeNumber"
    district_attribute: str = "l"
    club_attribute: str = "o"
    role_attribute: str = "title"
    phone_attribute: str = "mobile"
    groups_rdn: str = "ou=groups"
    group_object_class: str = "groupOfNames"
    member_attribute: str = "member"
    timeout: float = 5.0
    # PEM bundle that verifies an ldaps:// directory's certificate (a self-signed certificate
    # may be given as its own bundle); empty means the system's CAs. Certificates are always
    # verified, by the adapter and by bulk additions alike.
    ca_file: str = ""

    @property
    def councillors_dn(self) -> str:
        return f"{self.councillors_rdn},{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"{self.groups_rdn},{self.base_dn}"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(default="", repr=False)


@dataclass(frozen=True)
class DeliverySettings:
    lmtp_host: str = ""
    lmtp_port: int = 0
    workers: int = 4
    # Deliver in a second process (a second core) rather than in the one that accepts mail.
    separate_process: bool = True
    retry_initial: float = 60.0
    retry_max_interval: float = 3600.0
    retry_period: float = 432000.0


@dataclass(frozen=True)
class CouncilSettings:
    name: str = "Rada Miasta Przykładowo"
    helpdesk_email: str = "informatyk@urzad.miasto.example"
    helpdesk_phone: str = "+48 12 345 67 89"


@dataclass(frozen=True)
class ClientsSettings:
    """What councillors type into their mail program (credentials letter, welcome message)."""

    imap_host: str = ""
    imap_port: int = 0
    imap_security: str = "none"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"


@dataclass(frozen=True)
class ProvisioningSettings:
    password_length: int = 20
    send_welcome: bool = True
    retention_days: int = 90
    lifecycle_interval: float = 60.0


@dataclass(frozen=True)
class WebSettings:
    """The web server: councillors' acknowledgement links and document downloads."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8025
    # Address councillors' links point to; empty: http://<host>:<port>.
    public_url: str = ""
    # Clerks' interface: only members of this directory group may log in.
    clerks_group: str = "urzednicy"
    # A clerk's login lasts this long without activity (minutes).
    session_minutes: int = 60
    # Failed logins allowed per client address and per login name within the window.
    login_attempts: int = 5
    login_window_minutes: int = 15
    # Largest upload accepted by the clerks' interface (documents, rosters), in bytes.
    upload_max_bytes: int = 104857600
    # Seconds between refreshes of the live receipts matrix.
    refresh_seconds: int = 5


@dataclass(frozen=True)
class DistributionSettings:
    """Session documents to councillors: sending, receipts, reminders, paper."""

    # Local time of sessions and schedules.
    timezone: str = "Europe/Warsaw"
    # Packs larger than this (bytes, before encoding) are linked per recipient, not attached.
    attach_max_bytes: int = 26214400
    # Copies of every distribution (comma-separated addresses), e.g. the office and the mayor.
    copies: str = ""
    # Days an acknowledgement or download link stays valid after the session.
    link_valid_days: int = 30
    # Ask mail programs for a read receipt (Disposition-Notification-To).
    request_mdn: bool = True
    # Reminders to councillors who have not acknowledged: "<hours>h-after" (sending) and
    # "<hours>h-before" (the session), comma-separated. Empty: no reminders.
    reminders: str = "48h-after,24h-before"
    # From the cut-over date (YYYY-MM-DD) electronic circulation is binding; before it every
    # notice also yields a print list. Empty: not yet decided (paper stays binding).
    cutover_date: str = ""
    # Cost of one printed page (PLN) for the paper-saved figures.
    cost_per_page: str = "0.30"
    # Seconds between looks at the distributions table (changes made by other processes).
    sync_interval: float = 10.0
    # Seconds between IMAP checks for opened messages (0: never).
    imap_check_interval: float = 300.0
    # Days after sending during which opened flags are looked for.
    imap_check_days: int = 14
    # Seconds between runs of the reminder job.
    reminder_interval: float = 300.0


@dataclass(frozen=True)
class Settings:
    domain: str = "rada.miasto.example"
    var_dir: Path = Path("var")
    language: str = "pl"
    office_address: str = "biuro.rady@urzad.miasto.example"
    smtp: SmtpSettings = SmtpSettings()
    submission: SubmissionSettings = SubmissionSettings()
    smarthost: SmarthostSettings = SmarthostSettings()
    relay: RelaySettings = RelaySettings()
    stack: StackSettings = StackSettings()
    directory: DirectorySettings = DirectorySettings()
    database: DatabaseSettings = DatabaseSettings()
    delivery: DeliverySettings = DeliverySettings()
    council: CouncilSettings = CouncilSettings()
    clients: ClientsSettings = ClientsSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    web: WebSettings = WebSettings()
    distribution: DistributionSettings = DistributionSettings()
    # Committee slug -> display name; the slug names the group address komisja-<slug>@domain.
    committees: tuple[tuple[str, str], ...] = ()
    # Minimum notice before a session ([notice]; see mailsvc.domain.notice.parse_rules).
    notice_rules: tuple[Any, ...] = ()
    source: Path | None = None

    # Derived values: one place decides what an empty setting means.
    @property
    def ldap_url(self) -> str:
        return self.directory.url or f"ldap://{self.stack.host}:{self.stack.ldap_port}"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.var_dir / 'mailsvc.db'}"

    @property
    def lmtp_address(self) -> tuple[str, int]:
        return (
            self.delivery.lmtp_host or self.stack.host,
            self.delivery.lmtp_port or self.stack.lmtp_port,
        )

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The council's time zone (``distribution.timezone``): every local time people read."""
        return zoneinfo.ZoneInfo(self.distribution.timezone)

    @property
    def committee_names(self) -> dict[str, str]:
        return dict(self.committees)

    @property
    def client_imap(self) -> tuple[str, int, str]:
        c = self.clients
        return (
            c.imap_host or self.stack.host,
            c.imap_port or self.stack.imap_port,
            c.imap_security,
        )

    @property
    def client_smtp(self) -> tuple[str, int, str]:
        c = self.clients
        return (c.smtp_host or self.smtp_hostname, c.smtp_port, c.smtp_security)

    @property
    def web_url(self) -> str:
        return (self.web.public_url or f"http://{self.web.host}:{self.web.port}").rstrip("/")

    @property
    def smtp_hostname(self) -> str:
        return self.smtp.hostname or f"mail.{self.domain}"

    def with_changes(self, **sections: Any) -> Settings:
        """A variant of these settings: top-level keys or whole section objects/dicts."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
                value = dataclasses.replace(current, **value)  # type: ignore[type-var]
            changes[name] = value
        return dataclasses.replace(self, **changes)


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
        if key not in types_ or (prefix == "" and key in _NOT_KEYS):
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            raise ConfigError(f"{prefix}{key}: unknown key in {where}")
    for name, tp in types_.items():
        if prefix == "" and (name in _SECTIONS or name in _NOT_KEYS):
            continue
        dotted = f"{prefix}{name}"
        env_name = ENV_PREFIX + dotted.upper().replace(".", "__")
        if env_name in env:
            kwargs[name] = _coerce(f"{dotted} (from {env_name})", env[env_name], tp, from_env=True)
        elif name in values:
            kwargs[name] = _coerce(dotted, values[name], tp, from_env=False)
    return cls(**kwargs)


def _check_port(key: str, value: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{key} = {value!r}: expected a TCP port from {low} to 65535")


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} = {value!r}: expected a number greater than 0")


def validate(s: Settings) -> None:
    """Semantic checks that types alone do not catch."""
    if not _HOSTNAME.match(s.domain):
        raise ConfigError(
            f"domain = {s.domain!r}: expected a lowercase mail domain such as rada.example.org"
        )
    if s.language not in ("pl", "en"):
        raise ConfigError(f"language = {s.language!r}: expected 'pl' or 'en'")
    if "@" not in s.office_address:
        raise ConfigError(f"office_address = {s.office_address!r}: expected an email address")
    _check_port("smtp.port", s.smtp.port)
    _check_port("web.port", s.web.port, allow_zero=True)
    if s.directory.ca_file and not Path(s.directory.ca_file).is_file():
        raise ConfigError(f"directory.ca_file = {s.directory.ca_file!r}: no such file")
    _check_distribution(s.distribution)
    _check_port("submission.port", s.submission.port)
    _check_port("smarthost.port", s.smarthost.port, allow_zero=True)
    if s.smarthost.security not in ("none", "starttls", "tls"):
        raise ConfigError(
            f"smarthost.security = {s.smarthost.security!r}: expected 'none', 'starttls' or 'tls'"
        )
    if bool(s.smtp.tls_cert) != bool(s.smtp.tls_key) and s.smtp.tls_cert != "auto":
        raise ConfigError("smtp.tls_key: expected both smtp.tls_cert and smtp.tls_key, or neither")
    for key in (
        "max_connections",
        "max_connections_per_ip",
        "max_messages_per_ip_per_minute",
        "timeout",
        "max_bad_commands",
    ):
        _check_positive(f"smtp.{key}", getattr(s.smtp, key))
    if s.smtp.authentication_budget < 0:
        raise ConfigError(
            f"smtp.authentication_budget = {s.smtp.authentication_budget}: expected 0 or more"
        )
    if s.smtp.dns_resolver and not re.match(
        r"^[0-9A-Za-z.:\-\[\]]+?(:\d{1,5})?$", s.smtp.dns_resolver
    ):
        raise ConfigError(
            f"smtp.dns_resolver = {s.smtp.dns_resolver!r}: expected host or host:port"
        )
    if s.smtp.directory_cache_seconds < 0:
        raise ConfigError(
            f"smtp.directory_cache_seconds = {s.smtp.directory_cache_seconds}: expected 0 or more"
        )
    _check_positive("smarthost.timeout", s.smarthost.timeout)
    _check_positive("smarthost.workers", s.smarthost.workers)
    if s.smarthost.capture_retention_days < 0:
        raise ConfigError(
            f"smarthost.capture_retention_days = {s.smarthost.capture_retention_days}: "
            "expected 0 or more"
        )
    if s.relay.acknowledge_from and "@" not in s.relay.acknowledge_from:
        raise ConfigError(
            f"relay.acknowledge_from = {s.relay.acknowledge_from!r}: expected an email address"
        )
    if s.relay.log_retention_days < 1:
        raise ConfigError(
            f"relay.log_retention_days = {s.relay.log_retention_days}: expected 1 or more"
        )
    _check_port("stack.ldap_port", s.stack.ldap_port)
    _check_port("stack.imap_port", s.stack.imap_port)
    _check_port("stack.lmtp_port", s.stack.lmtp_port)
    _check_port("delivery.lmtp_port", s.delivery.lmtp_port, allow_zero=True)
    _check_positive("smtp.max_message_size", s.smtp.max_message_size)
    _check_positive("smtp.max_recipients", s.smtp.max_recipients)
    _check_positive("stack.start_timeout", s.stack.start_timeout)
    _check_positive("directory.timeout", s.directory.timeout)
    _check_positive("delivery.workers", s.delivery.workers)
    _check_positive("delivery.retry_initial", s.delivery.retry_initial)
    _check_positive("delivery.retry_max_interval", s.delivery.retry_max_interval)
    _check_positive("delivery.retry_period", s.delivery.retry_period)
    for key in ("imap_security", "smtp_security"):
        value = getattr(s.clients, key)
        if value not in ("none", "starttls", "tls"):
            raise ConfigError(f"clients.{key} = {value!r}: expected 'none', 'starttls' or 'tls'")
    _check_port("clients.imap_port", s.clients.imap_port, allow_zero=True)
    _check_port("clients.smtp_port", s.clients.smtp_port)
    _check_positive("provisioning.password_length", s.provisioning.password_length)
    if s.provisioning.password_length < 16:
        raise ConfigError(
            f"provisioning.password_length = {s.provisioning.password_length}: expected 16 or more"
        )
    _check_positive("provisioning.lifecycle_interval", s.provisioning.lifecycle_interval)
    if s.provisioning.retention_days < 0:
        raise ConfigError(
            f"provisioning.retention_days = {s.provisioning.retention_days}: expected 0 or more"
        )
    for key in ("base_dn", "admin_dn", "reader_dn", "councillors_rdn", "groups_rdn"):
        value = getattr(s.directory, key)
        if not _DN.match(value):
            raise ConfigError(
                f"directory.{key} = {value!r}: expected a DN such as dc=example,dc=org"
            )
    if s.directory.url and not s.directory.url.startswith(("ldap://", "ldaps://")):
        raise ConfigError(
            f"directory.url = {s.directory.url!r}: expected ldap://host:port or ldaps://"
        )
    url = s.database.url
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "database.url = <hidden>: expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )


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


_OFFSET = re.compile(r"^(\d{1,4})h-(after|before)$")


def reminder_offsets(spec: str) -> tuple[tuple[str, int], ...]:
    """ "48h-after,24h-before" -> (("after", 48), ("before", 24)). ValueError names the item."""
    out = []
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        m = _OFFSET.match(item)
        if not m:
            raise ValueError(f"{item!r}: expected <hours>h-after or <hours>h-before")
        out.append((m.group(2), int(m.group(1))))
    return tuple(out)


def _check_distribution(d: DistributionSettings) -> None:
    import datetime as _dt
    import decimal

    try:
        zoneinfo.ZoneInfo(d.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"distribution.timezone = {d.timezone!r}: expected a zone such as Europe/Warsaw"
        ) from None
    if d.cutover_date:
        try:
            _dt.date.fromisoformat(d.cutover_date)
        except ValueError:
            raise ConfigError(
                f"distribution.cutover_date = {d.cutover_date!r}: expected YYYY-MM-DD or empty"
            ) from None
    try:
        cost = decimal.Decimal(d.cost_per_page)
        if not cost.is_finite() or cost < 0:
            raise decimal.InvalidOperation
    except decimal.InvalidOperation:
        raise ConfigError(
            f"distribution.cost_per_page = {d.cost_per_page!r}: expected an amount such as 0.30"
        ) from None
    try:
        reminder_offsets(d.reminders)
    except ValueError as exc:
        raise ConfigError(f"distribution.reminders: {exc}") from None
    for address in (a.strip() for a in d.copies.split(",")):
        if address and ("@" not in address or any(c in address for c in " <>\r\n,;")):
            raise ConfigError(f"distribution.copies: {address!r} is not an email address")
    if d.attach_max_bytes < 0:
        raise ConfigError("distribution.attach_max_bytes: expected 0 or more")
    if d.link_valid_days < 1:
        raise ConfigError("distribution.link_valid_days: expected 1 or more")
    for key in ("sync_interval", "reminder_interval"):
        if getattr(d, key) <= 0:
            raise ConfigError(f"distribution.{key}: expected a positive number of seconds")


def _notice_rules(raw: Any) -> tuple[Any, ...]:
    from mailsvc.domain.notice import parse_rules

    if not isinstance(raw, dict):
        raise ConfigError("notice: expected a [notice] section")
    try:
        return tuple(parse_rules(raw))
    except ValueError as exc:
        message = str(exc) if str(exc).startswith("notice") else f"notice.{exc}"
        raise ConfigError(message) from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings once: file (or the embedded default), then environment overrides."""
    env = os.environ if env is None else env
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
    base: Settings = _build(Settings, "", top, env)
    settings = dataclasses.replace(
        base, source=chosen, committees=committees, notice_rules=notice_rules, **sections
    )
    settings = dataclasses.replace(settings, var_dir=settings.var_dir.absolute())
    validate(settings)
    return settings
