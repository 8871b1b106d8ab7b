"""The settings: one frozen dataclass per section of the TOML file, and ``Settings`` holding
them all with the values derived from them (what an empty setting means)."""

from __future__ import annotations

import dataclasses
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = ""
    max_message_size: int = 26214400
    # A body longer than this many bytes is written to its own file under var_dir/spool while
    # it arrives (memory per session stays small whatever the size); 0 keeps every body in memory.
    spool_threshold: int = 262144
    max_recipients: int = 100
    # STARTTLS: PEM files; empty means no STARTTLS; "auto" makes a self-signed pair in var_dir.
    tls_cert: str = ""
    tls_key: str = ""
    max_connections: int = 200
    max_connections_per_ip: int = 20
    max_messages_per_ip_per_minute: int = 120
    # Seconds a client may stay silent (command or data) before the connection is closed.
    timeout: float = 300.0
    # Unrecognised or out-of-sequence commands, and refused recipients (inbound), before the
    # connection is closed with 421.
    max_bad_commands: int = 10
    # Seconds a connection may last in all, busy or not (then 421 and closed).
    session_max_seconds: float = 900.0
    # Refused recipients (unknown or mandate ended) one client (/64 for IPv6) may try in an hour
    # before both kinds get the same reply (0: the same reply from the first).
    enumeration_misses: int = 5
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
    # Implicit TLS (RFC 8314; 465 in production): TLS from the first byte, then the same service
    # as on ``port``, with the same certificate (smtp.tls_cert, else a self-signed one). 0: off.
    tls_port: int = 0
    # Allow AUTH without TLS (only for loopback test setups).
    allow_plaintext_auth: bool = False
    # Failed AUTH commands one connection may make; the next one gets 421 and the connection
    # closes. (Failures per client network and per account are counted across connections and
    # processes with the web sign-in's limits, web.login_attempts.)
    max_auth_failures: int = 3
    # What one councillor may send per hour (0: no limit): a stolen password cannot spam.
    messages_per_hour: int = 100
    recipients_per_hour: int = 500


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
    # Acknowledgements queued per hour at most, in total and to one resident's domain.
    acknowledge_max_per_hour: int = 200
    acknowledge_max_per_domain_per_hour: int = 30
    # Domains treated as the council's own besides ``domain`` (comma or space separated; their
    # subdomains too): mail claiming them on port 25 must be authenticated (else 550 5.7.1).
    own_domains: str = ""

    def own_domain_list(self, domain: str) -> tuple[str, ...]:
        """``domain`` and the configured own domains, lower-case, without duplicates."""
        extra = self.own_domains.replace(",", " ").split()
        return tuple(dict.fromkeys(d.strip().rstrip(".").lower() for d in [domain, *extra]))


@dataclass(frozen=True)
class StackSettings:
    host: str = "127.0.0.1"
    ldap_port: int = 3389
    imap_port: int = 1143
    # Dovecot's IMAPS listener (TLS from the first byte, self-signed certificate under
    # var_dir/dovecot/tls/); 0: none. With it, imap_port offers STARTTLS too.
    imaps_port: int = 0
    lmtp_port: int = 2424
    slapd: str = "/usr/sbin/slapd"
    slaptest: str = "/usr/sbin/slaptest"
    slapadd: str = "/usr/sbin/slapadd"
    dovecot: str = "/usr/sbin/dovecot"
    start_timeout: float = 20.0
    # Which directory server the stack runs: "openldap" (slapd) or "samba" (Samba's AD DC).
    directory: str = "openldap"
    # Samba's LDAP ports cannot be moved from 389/636, so it gets a loopback address of its own.
    samba_host: str = "127.0.3.89"
    samba: str = "/usr/sbin/samba"
    samba_tool: str = "/usr/bin/samba-tool"
    # Seconds `samba-tool domain provision` may take (once per var_dir; ~15 s on an idle core).
    provision_timeout: float = 300.0
    # The service's database when database.url is empty: "sqlite" (var_dir/mailsvc.db) or
    # "postgresql" (a private cluster the stack runs from var_dir/postgres on host:pg_port).
    database: str = "sqlite"
    pg_port: int = 5433
    # PostgreSQL's bin directory (initdb, postgres, pg_dump...); empty: the newest
    # /usr/lib/postgresql/<version>/bin.
    postgres_bin: str = ""


@dataclass(frozen=True)
class SambaDirectory:
    """The embedded Samba AD DC as the service would reach it (stack.directory = "samba"),
    all derived from ``domain``, ``stack.samba_host`` and ``var_dir``."""

    realm: str
    netbios_domain: str
    dc_name: str
    base_dn: str
    url: str
    admin_dn: str
    admin_principal: str
    samba_dir: Path
    ca_file: Path

    @classmethod
    def of(cls, domain: str, host: str, var_dir: Path) -> SambaDirectory:
        realm = domain.upper()
        # NetBIOS names hold at most 15 characters; the first label of the domain, as Windows
        # suggests it. It never equals the realm, which has a dot.
        netbios = domain.split(".")[0].upper()[:15].rstrip("-")
        dc_name = "MAILSVC-DC" if netbios != "MAILSVC-DC" else "MAILSVC-AD"
        base_dn = ",".join(f"DC={label}" for label in domain.split("."))
        samba_dir = var_dir / "samba"
        return cls(
            realm=realm,
            netbios_domain=netbios,
            dc_name=dc_name,
            base_dn=base_dn,
            url=f"ldaps://{host}:636",
            admin_dn=f"CN=Administrator,CN=Users,{base_dn}",
            admin_principal=f"Administrator@{realm}",
            samba_dir=samba_dir,
            # A copy of samba/tls/cert.pem outside samba/ (0700): Dovecot's auth process, which
            # does not run as root, reads it too.
            ca_file=var_dir / "samba-ca.pem",
        )


@dataclass(frozen=True)
class DirectorySettings:
    url: str = ""
    # "openldap" or "ad" (Active Directory: user and group objects, unicodePwd,
    # userAccountControl); empty: "ad" with the stack's Samba (stack.directory = "samba"),
    # else "openldap". With "ad", settings left at their OpenLDAP defaults take AD's (AD_DEFAULTS).
    kind: str = ""
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
    # Office staff (clerks of the web panel) live here, apart from the councillors: a roster
    # import never sees them.
    staff_rdn: str = "ou=staff"
    group_object_class: str = "groupOfNames"
    member_attribute: str = "member"
    timeout: float = 5.0
    # PEM bundle that verifies the directory's certificate (ldaps://, or ldap:// with
    # starttls; a self-signed certificate may be given as its own bundle); empty means the
    # system's CAs. Certificates are always verified, by the adapter, bulk additions and
    # Dovecot alike.
    ca_file: str = ""
    # ldap:// with StartTLS before every bind (a directory that offers only port 389).
    starttls: bool = False

    @property
    def councillors_dn(self) -> str:
        return f"{self.councillors_rdn},{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"{self.groups_rdn},{self.base_dn}"

    @property
    def staff_dn(self) -> str:
        return f"{self.staff_rdn},{self.base_dn}"


# What directory.kind = "ad" changes where a setting was left at its OpenLDAP default.
AD_DEFAULTS = {
    "person_object_class": "user",
    "status_attribute": "userAccountControl",
    "external_id_attribute": "employeeID",
    "group_object_class": "group",
    "councillors_rdn": "OU=councillors",
    "groups_rdn": "OU=groups",
    "staff_rdn": "OU=staff",
}
# The stack's Samba: the service's own accounts, in the domain's Users container.
SAMBA_ADMIN_CN = "mailsvc-admin"
SAMBA_READER_CN = "mailsvc-reader"


def effective_directory(
    d: DirectorySettings, stack_directory: str, samba: SambaDirectory
) -> DirectorySettings:
    """``d`` with what an empty or default setting means: the kind, AD's attributes with
    kind = "ad", and the stack's Samba (address, base, accounts, CA) when it runs one."""
    kind = d.kind or ("ad" if stack_directory == "samba" else "openldap")
    defaults = DirectorySettings()
    changes: dict[str, Any] = {"kind": kind}
    if kind == "ad":
        changes.update(
            {k: v for k, v in AD_DEFAULTS.items() if getattr(d, k) == getattr(defaults, k)}
        )
    if stack_directory == "samba" and not d.url:
        base = samba.base_dn if d.base_dn == defaults.base_dn else d.base_dn
        changes.update(url=samba.url, base_dn=base, ca_file=d.ca_file or str(samba.ca_file))
        if d.admin_dn == defaults.admin_dn:
            changes["admin_dn"] = f"CN={SAMBA_ADMIN_CN},CN=Users,{base}"
        if d.reader_dn == defaults.reader_dn:
            changes["reader_dn"] = f"CN={SAMBA_READER_CN},CN=Users,{base}"
    return dataclasses.replace(d, **changes)


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
    # PEM CAs that verify the IMAP server's certificate for the service's own logins (the
    # opened check, `mailsvc mailbox`) instead of the system's; empty: the system's CAs.
    imap_ca_file: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    # Implicit-TLS submission (465) on smtp_host, offered besides smtp_port; 0: not offered.
    smtps_port: int = 0


@dataclass(frozen=True)
class ProvisioningSettings:
    password_length: int = 20
    send_welcome: bool = True
    retention_days: int = 90
    lifecycle_interval: float = 60.0
    # Argon2id cost of new password hashes ({ARGON2}); OWASP's minimum by default.
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1


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
    # A clerk's login lasts this long without activity (minutes)…
    session_minutes: int = 60
    # …and never longer than this from sign-in, active or not (hours).
    session_max_hours: int = 12
    # Minutes between checks that a signed-in clerk's account is still active and still in
    # web.clerks_group (a clerk removed from the group loses the session at the next check).
    recheck_minutes: int = 5
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
class EvidenceSettings:
    """The signed evidence pack of a session (``mailsvc evidence export``)."""

    # The office's signing certificate and key: a PKCS#12 file (.p12/.pfx). Empty: a
    # self-signed certificate made once under <var_dir>/secrets/, and the pack says so.
    signing_certificate: str = ""
    # A file holding the PKCS#12 file's password (first line); empty: no password.
    signing_password_file: str = ""
    # An RFC 3161 time-stamping authority (http or https URL); empty: no timestamp.
    tsa_url: str = ""
    # PEM file with the TSA's root certificate(s), to validate and embed its token's chain.
    tsa_ca_file: str = ""


@dataclass(frozen=True)
class DkimSelector:
    """One signing key, published as ``<name>._domainkey.<dkim domain>``."""

    name: str
    # "rsa-sha256" (a 2048-bit RSA key) or "ed25519-sha256" (RFC 8463).
    algorithm: str = "rsa-sha256"
    # PEM file of the private key; empty: <var_dir>/secrets/dkim-<name>.pem.
    key_file: str = ""


@dataclass(frozen=True)
class DkimSettings:
    """DKIM signatures on everything that leaves through the smarthost route."""

    enabled: bool = True
    # The d= of the signatures; empty: the council's domain. Only mail whose From is in this
    # domain (or a subdomain of it) is signed.
    domain: str = ""
    # Every selector signs every message (RSA and Ed25519 side by side); [[dkim.selectors]]
    # tables in the file, "name:algorithm[:key_file],..." in MAILSVC_DKIM__SELECTORS.
    selectors: tuple[DkimSelector, ...] = ()


@dataclass(frozen=True)
class DnsSettings:
    """What `mailsvc dns` prints; nothing here changes how mail is handled."""

    # A domain whose SPF record the smarthost's provider publishes ("include:" in ours);
    # empty: only our MX hosts send ("v=spf1 mx -all").
    spf_include: str = ""
    # Where DMARC aggregate reports (rua) and TLS reports go; empty: office_address.
    report_address: str = ""
    # TTL of the printed records (seconds).
    ttl: int = 3600


@dataclass(frozen=True)
class MetricsSettings:
    """``/metrics`` in the Prometheus text format, served by `mailsvc serve` itself."""

    # 0: not served. Production would use e.g. 9125.
    port: int = 0
    # Loopback by default: the figures are not secret, but nobody outside needs them.
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class LoggingSettings:
    """How `mailsvc serve` (and its delivery process) write their log to stderr."""

    # "text" (one readable line) or "json" (one JSON object per line: time, level, logger,
    # message, exception) for a log collector.
    format: str = "text"


@dataclass(frozen=True)
class MtaStsSettings:
    """The MTA-STS policy (RFC 8461) the web server serves at /.well-known/mta-sts.txt."""

    # "testing" (senders only report), "enforce", "none" (withdraws a policy); empty: no policy
    # is served (404) and `mailsvc dns` prints no _mta-sts record.
    mode: str = ""
    # MX host names senders may use, comma or space separated ("*.example.org" allowed);
    # empty: smtp.hostname.
    mx: str = ""
    # Seconds senders keep the policy (RFC 8461 allows up to 31557600).
    max_age: int = 604800

    def mx_list(self, default: str) -> tuple[str, ...]:
        names = self.mx.replace(",", " ").split()
        return tuple(dict.fromkeys(n.rstrip(".").lower() for n in names)) or (default,)


@dataclass(frozen=True)
class ClusterSettings:
    """Several `mailsvc serve` nodes on one PostgreSQL database (one node: nothing to set)."""

    # This node's name in the nodes table and `mailsvc cluster status`; empty: made once from
    # the host name and kept in var_dir/node-id.
    node_id: str = ""
    # Seconds a claimed delivery stays with its node without a heartbeat renewing it; after
    # that another node takes it over (a node killed mid-delivery). Longer than any delivery.
    lease_seconds: float = 120.0
    # Seconds between a node's heartbeats (its nodes row and its leases are renewed).
    heartbeat_seconds: float = 5.0
    # Seconds between a follower's tries to become the scheduler's leader (0 < x <= 60).
    leader_retry_seconds: float = 3.0


# The stack's PostgreSQL cluster (stack.database = "postgresql"): the service's role and
# database, and the secret (under var_dir/secrets, made by `mailsvc stack up`) with its password.
STACK_PG_ROLE = "mailsvc"
STACK_PG_DATABASE = "mailsvc"
STACK_PG_SECRET = "postgres-mailsvc"  # noqa: S105 - the secret's file name


def stack_postgres_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the stack's cluster for the service (role mailsvc). The password is
    read from the secret store's file as it is now: `mailsvc stack up` creates it."""
    try:
        secret = settings.var_dir / "secrets" / STACK_PG_SECRET
        password = secret.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        password = ""  # the stack never ran: the connection fails with an authentication error
    host = settings.stack.host
    host = f"[{host}]" if ":" in host else host
    auth = f"{STACK_PG_ROLE}:{urllib.parse.quote(password, safe='')}" if password else STACK_PG_ROLE
    return f"postgresql+asyncpg://{auth}@{host}:{settings.stack.pg_port}/{STACK_PG_DATABASE}"


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
    evidence: EvidenceSettings = EvidenceSettings()
    dkim: DkimSettings = DkimSettings()
    dns: DnsSettings = DnsSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    mta_sts: MtaStsSettings = MtaStsSettings()
    cluster: ClusterSettings = ClusterSettings()
    # Committee slug -> display name; the slug names the group address komisja-<slug>@domain.
    committees: tuple[tuple[str, str], ...] = ()
    # Minimum notice before a session ([notice]; see mailsvc.domain.notice.parse_rules).
    notice_rules: tuple[Any, ...] = ()
    source: Path | None = None

    # Derived values: one place decides what an empty setting means.
    @property
    def ldap(self) -> DirectorySettings:
        """The directory settings with every derived value filled in (see
        ``effective_directory``): what the service and Dovecot use."""
        return effective_directory(self.directory, self.stack.directory, self.samba_directory)

    @property
    def ldap_url(self) -> str:
        return self.ldap.url or f"ldap://{self.stack.host}:{self.stack.ldap_port}"

    @property
    def samba_directory(self) -> SambaDirectory:
        """Where and how to reach the embedded Samba AD DC (when stack.directory = "samba")."""
        return SambaDirectory.of(self.domain, self.stack.samba_host, self.var_dir)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        if self.stack.database == "postgresql":
            return stack_postgres_url(self)
        return f"sqlite+aiosqlite:///{self.var_dir / 'mailsvc.db'}"

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
    def client_smtps(self) -> tuple[str, int, str] | None:
        """The implicit-TLS submission port councillors may use instead, if one is offered."""
        port = self.clients.smtps_port
        return (self.client_smtp[0], port, "tls") if port else None

    @property
    def web_url(self) -> str:
        return (self.web.public_url or f"http://{self.web.host}:{self.web.port}").rstrip("/")

    @property
    def smtp_hostname(self) -> str:
        return self.smtp.hostname or f"mail.{self.domain}"

    @property
    def dkim_domain(self) -> str:
        return (self.dkim.domain or self.domain).rstrip(".").lower()

    def dkim_key_file(self, selector: DkimSelector) -> Path:
        """Where the selector's private key is kept."""
        if selector.key_file:
            return Path(selector.key_file)
        return self.var_dir / "secrets" / f"dkim-{selector.name}.pem"

    def with_changes(self, **sections: Any) -> Settings:
        """A variant of these settings: top-level keys or whole section objects/dicts."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
                value = dataclasses.replace(current, **value)  # type: ignore[type-var]
            changes[name] = value
        return dataclasses.replace(self, **changes)
