"""The DNS records the council's domain needs for its mail (``mailsvc dns``).

Built from the settings and the DKIM keys on disk; nothing is looked up. Each record carries a
``purpose`` (what it is for, a key the command turns into a comment in the chosen language) and
problems worth a word come back as ``Advice`` (a key and its values).

- MX: the domain's mail goes to ``smtp.hostname`` (mail.<domain>).
- SPF: ``v=spf1 mx -all`` (only our MX hosts send), with ``include:`` of ``dns.spf_include`` when
  a provider's smarthost sends for us.
- DKIM: one TXT per selector whose key exists.
- DMARC: ``p=none`` until a DKIM key exists, then ``p=reject``; reports to
  ``dns.report_address`` (office_address when empty), with the authorisation record RFC 7489
  7.1 asks of a report address in another organisation's domain.
- MTA-STS (RFC 8461), when ``mta_sts.mode`` is set: ``_mta-sts`` TXT whose id is derived from
  the policy text (so it changes whenever the policy does); the web server serves that same text
  at /.well-known/mta-sts.txt, to be reached as https://mta-sts.<domain>/.well-known/mta-sts.txt.
- TLS-RPT (RFC 8460): ``_smtp._tls`` TXT.
- Mail programs: autoconfig/autodiscover CNAMEs to the web host, and RFC 6186 SRV records for
  IMAP and submission (RFC 8314's ``_submissions`` for implicit TLS), plus ``_autodiscover``.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailsvc.config import Settings, is_loopback
from mailsvc.relay.dkim.keys import PrivateKey, public_record
from mailsvc.relay.smtp.authres.dmarc import _organizational_domain

MX_PREFERENCE = 10
TXT_STRING = 255  # the longest character-string in a TXT record


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, with the final dot
    type: str
    value: str  # TXT: the text itself, unquoted; others: the record data as in a zone file
    purpose: str

    def rdata(self) -> str:
        """The record data as a zone file writes it (TXT split into quoted strings)."""
        if self.type != "TXT":
            return self.value
        pieces = [self.value[i : i + TXT_STRING] for i in range(0, len(self.value), TXT_STRING)]
        return " ".join(f'"{piece}"' for piece in pieces or [""])


@dataclass(frozen=True)
class Advice:
    key: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DnsPlan:
    domain: str
    records: list[Record]
    advice: list[Advice]
    mta_sts_policy: str


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _is_dns_name(host: str) -> bool:
    if not host or is_loopback(host) or ":" in host:
        return False
    return not host.replace(".", "").isdigit()  # an IPv4 address is no target for a record


def mta_sts_policy(settings: Settings) -> str:
    """The MTA-STS policy file (RFC 8461 3.2, CRLF after every line); "" when off."""
    sts = settings.mta_sts
    if not sts.mode:
        return ""
    lines = ["version: STSv1", f"mode: {sts.mode}"]
    if sts.mode != "none":
        lines += [f"mx: {mx}" for mx in sts.mx_list(settings.smtp_hostname)]
    lines.append(f"max_age: {sts.max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def mta_sts_id(policy: str) -> str:
    """The id of the ``_mta-sts`` record: the policy text's digest (1-32 letters and digits,
    RFC 8461 3.1), so that a changed policy is fetched again."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def report_address(settings: Settings) -> str:
    return settings.dns.report_address or settings.office_address


def _web_host(settings: Settings) -> str:
    host = urllib.parse.urlsplit(settings.web.public_url).hostname or ""
    return host if _is_dns_name(host) else settings.smtp_hostname


def _client_srv(settings: Settings, advice: list[Advice]) -> list[Record]:
    """RFC 6186: where mail programs find IMAP and submission."""
    domain = settings.domain
    c = settings.clients
    out = []
    if _is_dns_name(c.imap_host):
        tls = c.imap_security == "tls"
        service = "_imaps._tcp" if tls else "_imap._tcp"
        host, port = c.imap_host, c.imap_port or (993 if tls else 143)
    else:
        # The embedded default's IMAP is on loopback: name what production would have.
        service, host, port = "_imaps._tcp", settings.smtp_hostname, 993
        advice.append(Advice("imap_assumed", {"host": host, "port": str(port)}))
    out.append(Record(fqdn(f"{service}.{domain}"), "SRV", f"0 1 {port} {fqdn(host)}", "srv_imap"))
    smtp_host, smtp_port, security = settings.client_smtp
    if not _is_dns_name(smtp_host):
        smtp_host = settings.smtp_hostname
    service = "_submissions._tcp" if security == "tls" else "_submission._tcp"
    out.append(
        Record(
            fqdn(f"{service}.{domain}"), "SRV", f"0 1 {smtp_port} {fqdn(smtp_host)}", "srv_submit"
        )
    )
    return out


def plan(settings: Settings, keys: Mapping[str, PrivateKey | None]) -> DnsPlan:
    """Every record for ``settings.domain``; ``keys`` maps each configured selector to its
    key (None when its file is missing)."""
    domain, mx = settings.domain, settings.smtp_hostname
    dkim_domain = settings.dkim_domain
    advice: list[Advice] = []
    records = [Record(fqdn(domain), "MX", f"{MX_PREFERENCE} {fqdn(mx)}", "mx")]
    include = f" include:{settings.dns.spf_include}" if settings.dns.spf_include else ""
    records.append(Record(fqdn(domain), "TXT", f"v=spf1 mx{include} -all", "spf"))

    published = False
    for selector in settings.dkim.selectors:
        key = keys.get(selector.name)
        if key is None:
            advice.append(Advice("dkim_key_missing", {"selector": selector.name}))
            continue
        name = fqdn(f"{selector.name}._domainkey.{dkim_domain}")
        records.append(Record(name, "TXT", public_record(key), "dkim"))
        published = True
    signing = published and settings.dkim.enabled
    if not settings.dkim.selectors:
        advice.append(Advice("dkim_none"))
    elif not settings.dkim.enabled:
        advice.append(Advice("dkim_disabled"))
    office_domain = settings.office_address.rpartition("@")[2].lower()
    if signing and not (office_domain == dkim_domain or office_domain.endswith("." + dkim_domain)):
        advice.append(Advice("office_unsigned", {"address": settings.office_address}))

    web = fqdn(_web_host(settings))
    rua = report_address(settings)
    policy = "reject" if signing else "none"
    records.append(
        Record(fqdn(f"_dmarc.{domain}"), "TXT", f"v=DMARC1; p={policy}; rua=mailto:{rua}", "dmarc")
    )
    rua_domain = rua.rpartition("@")[2].lower()
    if _organizational_domain(rua_domain) != _organizational_domain(domain):
        # RFC 7489 7.1: the report address's domain agrees to take reports for ours.
        name = fqdn(f"{domain}._report._dmarc.{rua_domain}")
        records.append(Record(name, "TXT", "v=DMARC1", "dmarc_report"))

    policy_text = mta_sts_policy(settings)
    if policy_text:
        sts_id = mta_sts_id(policy_text)
        name = fqdn(f"_mta-sts.{domain}")
        records.append(Record(name, "TXT", f"v=STSv1; id={sts_id}", "mta_sts"))
        records.append(Record(fqdn(f"mta-sts.{domain}"), "CNAME", web, "mta_sts_host"))
    else:
        advice.append(Advice("mta_sts_off"))
    records.append(
        Record(fqdn(f"_smtp._tls.{domain}"), "TXT", f"v=TLSRPTv1; rua=mailto:{rua}", "tls_rpt")
    )

    for label in ("autoconfig", "autodiscover"):
        records.append(Record(fqdn(f"{label}.{domain}"), "CNAME", web, label))
    records.append(
        Record(fqdn(f"_autodiscover._tcp.{domain}"), "SRV", f"0 1 443 {web}", "srv_autodiscover")
    )
    records += _client_srv(settings, advice)
    return DnsPlan(domain, records, advice, policy_text)
