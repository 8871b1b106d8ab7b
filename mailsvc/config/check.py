"""What types alone do not catch: ports, positive numbers, addresses, DNs, URLs, the time zone,
the reminders; each problem one ConfigError line naming the key, the value and what is expected."""

from __future__ import annotations

import ipaddress
import re
import ssl
import urllib.parse
import zoneinfo
from pathlib import Path

from mailsvc.config.settings import (
    DistributionSettings,
    DkimSettings,
    DnsSettings,
    EvidenceSettings,
    MtaStsSettings,
    Settings,
)
from mailsvc.errors import ConfigError

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}$"
)
_DN = re.compile(r"^[A-Za-z][\w-]*=.+")
# A DKIM selector is one or more DNS labels (RFC 6376 3.1).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# A domain named in SPF's include: labels may start with "_" (e.g. _spf.provider.example).
_SPF_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(_?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}$"
)
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
MTA_STS_MODES = ("testing", "enforce", "none")


def _check_port(key: str, value: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{key} = {value!r}: expected a TCP port from {low} to 65535")


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} = {value!r}: expected a number greater than 0")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) stays on this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_directory_url(url: str, starttls: bool) -> None:
    """Passwords cross the directory connection (binds), so it must not be clear text on a
    network: ldap:// to another machine only with StartTLS, ldaps:// anywhere."""
    if not url:
        if starttls:
            raise ConfigError(
                "directory.starttls = true: the embedded slapd offers no TLS (it listens only "
                "on this machine); set directory.url to the directory that offers StartTLS, or "
                "set directory.starttls = false"
            )
        return  # the embedded stack's slapd on stack.host, which must be loopback
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigError(
            f"directory.url = {url!r}: expected ldaps://host:port, ldap://host:port with "
            "directory.starttls = true, or ldap://127.0.0.1:port"
        )
    if scheme == "ldaps" and starttls:
        raise ConfigError(
            f"directory.url = {url!r} with directory.starttls = true: ldaps:// is TLS from the "
            "first byte and StartTLS is for ldap://; use one of them "
            f"(ldap://{parts.hostname}:389 with StartTLS, or ldaps:// without)"
        )
    if scheme == "ldap" and not starttls and not is_loopback(parts.hostname):
        raise ConfigError(
            f"directory.url = {url!r}: ldap:// to another machine would send passwords and "
            "directory data unencrypted; set directory.starttls = true if the directory "
            f"offers StartTLS, or use ldaps://{parts.hostname}:636 (either with "
            "directory.ca_file for a private CA)"
        )


def _check_argon2(s: Settings) -> None:
    """What Argon2 itself requires (a value it refuses would fail only at the first hash)."""
    p = s.provisioning
    _check_positive("provisioning.argon2_time_cost", p.argon2_time_cost)
    if not 1 <= p.argon2_parallelism <= 255:
        raise ConfigError(
            f"provisioning.argon2_parallelism = {p.argon2_parallelism}: expected 1 to 255"
        )
    if p.argon2_memory_kib < 8 * p.argon2_parallelism:
        raise ConfigError(
            f"provisioning.argon2_memory_kib = {p.argon2_memory_kib}: expected at least 8 KiB "
            f"per lane ({8 * p.argon2_parallelism} with argon2_parallelism = "
            f"{p.argon2_parallelism})"
        )


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
    _check_directory_url(s.directory.url, s.directory.starttls)
    if s.directory.ca_file and not Path(s.directory.ca_file).is_file():
        raise ConfigError(f"directory.ca_file = {s.directory.ca_file!r}: no such file")
    _check_distribution(s.distribution)
    _check_evidence(s.evidence)
    _check_dkim(s.dkim)
    _check_dns(s.dns)
    _check_operations(s)
    _check_mta_sts(s.mta_sts)
    _check_cluster(s)
    _check_port("submission.port", s.submission.port)
    _check_port("submission.tls_port", s.submission.tls_port, allow_zero=True)
    taken = {s.submission.port: "submission.port"}
    if s.smtp.host == s.submission.host:
        taken.setdefault(s.smtp.port, "smtp.port")
    if s.submission.tls_port in taken:
        raise ConfigError(
            f"submission.tls_port = {s.submission.tls_port}: already {taken[s.submission.tls_port]}"
            " (implicit TLS needs a port of its own, 465 in production)"
        )
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
        "session_max_seconds",
    ):
        _check_positive(f"smtp.{key}", getattr(s.smtp, key))
    if s.smtp.enumeration_misses < 0:
        raise ConfigError(
            f"smtp.enumeration_misses = {s.smtp.enumeration_misses}: expected 0 or more"
        )
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
    _check_positive("relay.acknowledge_max_per_hour", s.relay.acknowledge_max_per_hour)
    _check_positive(
        "relay.acknowledge_max_per_domain_per_hour", s.relay.acknowledge_max_per_domain_per_hour
    )
    for own in s.relay.own_domain_list(s.domain)[1:]:
        if not _HOSTNAME.match(own):
            raise ConfigError(
                f"relay.own_domains: {own!r} is not a mail domain such as rada.example.org"
            )
    if s.relay.log_retention_days < 1:
        raise ConfigError(
            f"relay.log_retention_days = {s.relay.log_retention_days}: expected 1 or more"
        )
    _check_port("stack.ldap_port", s.stack.ldap_port)
    _check_port("stack.imap_port", s.stack.imap_port)
    _check_port("stack.imaps_port", s.stack.imaps_port, allow_zero=True)
    if s.stack.imaps_port in (s.stack.imap_port, s.stack.lmtp_port):
        raise ConfigError(
            f"stack.imaps_port = {s.stack.imaps_port}: expected a port of its own (not "
            "stack.imap_port or stack.lmtp_port), or 0 for none"
        )
    _check_port("stack.lmtp_port", s.stack.lmtp_port)
    _check_port("delivery.lmtp_port", s.delivery.lmtp_port, allow_zero=True)
    _check_positive("smtp.max_message_size", s.smtp.max_message_size)
    if s.smtp.spool_threshold < 0:
        raise ConfigError(
            f"smtp.spool_threshold = {s.smtp.spool_threshold}: expected 0 (off) or a size in bytes"
        )
    _check_positive("smtp.max_recipients", s.smtp.max_recipients)
    _check_positive("stack.start_timeout", s.stack.start_timeout)
    _check_stack_directory(s)
    _check_directory_kind(s)
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
    _check_service_imap(s)
    _check_port("clients.smtp_port", s.clients.smtp_port)
    _check_port("clients.smtps_port", s.clients.smtps_port, allow_zero=True)
    _check_positive("provisioning.password_length", s.provisioning.password_length)
    if s.provisioning.password_length < 16:
        raise ConfigError(
            f"provisioning.password_length = {s.provisioning.password_length}: expected 16 or more"
        )
    _check_positive("provisioning.lifecycle_interval", s.provisioning.lifecycle_interval)
    _check_argon2(s)
    if s.provisioning.retention_days < 0:
        raise ConfigError(
            f"provisioning.retention_days = {s.provisioning.retention_days}: expected 0 or more"
        )
    for key in ("base_dn", "admin_dn", "reader_dn", "councillors_rdn", "groups_rdn", "staff_rdn"):
        value = getattr(s.directory, key)
        if not _DN.match(value):
            raise ConfigError(
                f"directory.{key} = {value!r}: expected a DN such as dc=example,dc=org"
            )
    _check_staff_apart(s.directory.staff_dn, s.directory.councillors_dn)
    if s.directory.url and not s.directory.url.startswith(("ldap://", "ldaps://")):
        raise ConfigError(
            f"directory.url = {s.directory.url!r}: expected ldap://host:port or ldaps://"
        )
    url = s.database.url
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "database.url = <hidden>: expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )


LOG_FORMATS = ("text", "json")


def _check_operations(s: Settings) -> None:
    """[metrics] and [logging]."""
    _check_port("metrics.port", s.metrics.port, allow_zero=True)
    if s.metrics.port and not s.metrics.host.strip():
        raise ConfigError("metrics.host = '': expected an address to listen on, e.g. 127.0.0.1")
    if s.logging.format not in LOG_FORMATS:
        raise ConfigError(f"logging.format = {s.logging.format!r}: expected 'text' or 'json'")


def _check_service_imap(s: Settings) -> None:
    """The service logs in to clients.imap_host itself; the opened check does so with Dovecot's
    master password, which opens every mailbox: refused at start rather than sent in clear."""
    if s.clients.imap_ca_file:
        try:
            ssl.create_default_context(cafile=s.clients.imap_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"clients.imap_ca_file = {s.clients.imap_ca_file!r}: expected a PEM file of CA "
                f"certificates ({exc})"
            ) from None
    host, _, security = s.client_imap
    if s.distribution.imap_check_interval > 0 and security == "none" and not is_loopback(host):
        raise ConfigError(
            f"clients.imap_security = 'none' with clients.imap_host = {host!r}: the opened "
            "check (distribution.imap_check_interval) would send Dovecot's master password "
            "unencrypted to another machine; set clients.imap_security = 'tls' (IMAPS, port "
            "993) or 'starttls' (port 143), or distribution.imap_check_interval = 0"
        )


def _check_directory_kind(s: Settings) -> None:
    if s.directory.kind not in ("", "openldap", "ad"):
        raise ConfigError(
            f"directory.kind = {s.directory.kind!r}: expected 'openldap', 'ad' (Active "
            "Directory) or empty (from stack.directory)"
        )
    d = s.ldap
    if d.kind == "ad" and d.url.lower().startswith("ldap://") and not d.starttls:
        raise ConfigError(
            f"directory.kind = 'ad' with directory.url = {d.url!r}: Active Directory takes "
            "passwords only over TLS; use ldaps:// or set directory.starttls = true"
        )


def _check_stack_directory(s: Settings) -> None:
    if s.stack.directory not in ("openldap", "samba"):
        raise ConfigError(
            f"stack.directory = {s.stack.directory!r}: expected 'openldap' (slapd) or 'samba' "
            "(Samba's Active Directory domain controller)"
        )
    _check_positive("stack.provision_timeout", s.stack.provision_timeout)
    if s.stack.database not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"stack.database = {s.stack.database!r}: expected 'sqlite' (a file under var_dir) "
            "or 'postgresql' (the stack's own PostgreSQL cluster)"
        )
    _check_port("stack.pg_port", s.stack.pg_port)
    try:
        address = ipaddress.ip_address(s.stack.samba_host)
    except ValueError:
        address = None
    # Samba listens on the addresses of the interfaces it is given; an IPv4 loopback address
    # is routed to lo whole (127.0.0.0/8) without being configured there.
    if address is None or address.version != 4 or not address.is_loopback:
        raise ConfigError(
            f"stack.samba_host = {s.stack.samba_host!r}: expected an IPv4 loopback address "
            "such as 127.0.3.89 (Samba's LDAP ports 389 and 636 cannot be moved, so it gets "
            "an address of its own)"
        )


def _within(dn: str, container: str) -> bool:
    """``dn`` is ``container`` or below it (spelling compared loosely: case, spaces after
    commas; enough to catch a configuration that nests one subtree in the other)."""

    def norm(text: str) -> str:
        return ",".join(part.strip() for part in text.lower().split(","))

    inner, outer = norm(dn), norm(container)
    return inner == outer or inner.endswith("," + outer)


def _check_staff_apart(staff_dn: str, councillors_dn: str) -> None:
    # A subtree search of either would return the other's entries: a roster import would then
    # disable clerks, or the panel would take councillors for staff.
    if _within(staff_dn, councillors_dn) or _within(councillors_dn, staff_dn):
        raise ConfigError(
            f"directory.staff_rdn: {staff_dn!r} and the councillors' {councillors_dn!r} must be "
            "separate subtrees (neither inside the other)"
        )


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


def _check_evidence(e: EvidenceSettings) -> None:
    if e.tsa_url and not e.tsa_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"evidence.tsa_url = {e.tsa_url!r}: expected an http:// or https:// URL or empty"
        )
    if e.tsa_ca_file and not Path(e.tsa_ca_file).is_file():
        raise ConfigError(f"evidence.tsa_ca_file = {e.tsa_ca_file!r}: no such file")
    if e.signing_password_file and not e.signing_certificate:
        raise ConfigError(
            "evidence.signing_password_file is set but evidence.signing_certificate is empty"
        )


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


def _check_dkim(d: DkimSettings) -> None:
    if d.domain and not _HOSTNAME.match(d.domain):
        raise ConfigError(f"dkim.domain = {d.domain!r}: expected a domain such as rada.example.org")
    seen: set[str] = set()
    for selector in d.selectors:
        if not _SELECTOR.match(selector.name):
            raise ConfigError(
                f"dkim.selectors: name = {selector.name!r}: expected lowercase letters, digits "
                "and hyphens, such as rsa2026"
            )
        if selector.name in seen:
            raise ConfigError(f"dkim.selectors: {selector.name!r} is listed twice")
        seen.add(selector.name)
        if selector.algorithm not in DKIM_ALGORITHMS:
            raise ConfigError(
                f"dkim.selectors: {selector.name}: algorithm = {selector.algorithm!r}: "
                "expected 'rsa-sha256' or 'ed25519-sha256'"
            )


def _check_dns(d: DnsSettings) -> None:
    if d.spf_include and not _SPF_DOMAIN.match(d.spf_include):
        raise ConfigError(
            f"dns.spf_include = {d.spf_include!r}: expected a domain such as _spf.provider.example"
        )
    if d.report_address and ("@" not in d.report_address or " " in d.report_address):
        raise ConfigError(f"dns.report_address = {d.report_address!r}: expected an email address")
    _check_positive("dns.ttl", d.ttl)


_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_cluster(s: Settings) -> None:
    c = s.cluster
    if c.node_id and not _NODE_ID.match(c.node_id):
        raise ConfigError(
            f"cluster.node_id = {c.node_id!r}: expected up to 64 letters, digits, '.', '_' or "
            "'-' (starting with a letter or digit)"
        )
    _check_positive("cluster.heartbeat_seconds", c.heartbeat_seconds)
    if c.lease_seconds < 3 * c.heartbeat_seconds:
        raise ConfigError(
            f"cluster.lease_seconds = {c.lease_seconds!r}: expected at least three heartbeats "
            f"(3 x cluster.heartbeat_seconds = {3 * c.heartbeat_seconds:g}), or a node's claims "
            "would expire while it is alive"
        )
    if not 0 < c.leader_retry_seconds <= 60:
        raise ConfigError(
            f"cluster.leader_retry_seconds = {c.leader_retry_seconds!r}: expected seconds "
            "greater than 0 and at most 60 (how often a follower tries to lead the scheduler)"
        )


def _check_mta_sts(m: MtaStsSettings) -> None:
    if m.mode and m.mode not in MTA_STS_MODES:
        raise ConfigError(
            f"mta_sts.mode = {m.mode!r}: expected 'testing', 'enforce', 'none' or empty (off)"
        )
    for name in m.mx_list("mail.example.org"):
        # RFC 8461 3.2: a host name, or "*." and a domain (one label of wildcard).
        if not _HOSTNAME.match(name.removeprefix("*.")):
            raise ConfigError(
                f"mta_sts.mx: {name!r} is not an MX host name such as mail.example.org"
            )
    if not 0 < m.max_age <= 31557600:
        raise ConfigError(
            f"mta_sts.max_age = {m.max_age}: expected seconds from 1 to 31557600 (a year)"
        )
