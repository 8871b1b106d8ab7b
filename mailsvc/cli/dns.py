"""`mailsvc dns` (the records to publish) and `mailsvc dkim keygen` (a new signing key).

Rotation (README, "DKIM and DNS"): ``keygen`` a new selector, publish its record and list it in
[dkim] beside the old one; once the record is visible and mail signed with the old key has been
delivered, remove the old selector, and its record a week later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from mailsvc.config import DkimSelector, Settings, validate
from mailsvc.errors import MailsvcError
from mailsvc.relay.dkim import keys as dkim_keys
from mailsvc.relay.dnsrecords import DnsPlan, plan

_ALGORITHMS = {"rsa": dkim_keys.RSA, "ed25519": dkim_keys.ED25519}

_TEXT: dict[str, dict[str, str]] = {
    "pl": {
        "header": "; Rekordy DNS dla {domain} (wklej do strefy; TTL {ttl} s)",
        "mx": "; MX: poczta dla domeny trafia do tego serwera",
        "spf": "; SPF: kto może wysyłać pocztę z tej domeny",
        "dkim": "; DKIM: klucz publiczny selektora (podpisy wychodzącej poczty)",
        "dmarc": "; DMARC: p=none bez kluczy DKIM, p=reject gdy podpisujemy; raporty na rua",
        "dmarc_report": "; DMARC: zgoda domeny adresu raportów (publikuje się w jej strefie)",
        "mta_sts": "; MTA-STS: identyfikator polityki (zmienia się razem z polityką)",
        "mta_sts_host": "; MTA-STS: serwer WWW z polityką (jego certyfikat HTTPS musi "
        "obejmować tę nazwę)",
        "tls_rpt": "; TLS-RPT: raporty o szyfrowaniu poczty przychodzącej",
        "autoconfig": "; Autokonfiguracja programów pocztowych (Thunderbird)",
        "autodiscover": "; Autodiscover (Outlook)",
        "srv_autodiscover": "; Autodiscover przez SRV",
        "srv_imap": "; RFC 6186: serwer IMAP dla programów pocztowych",
        "srv_submit": "; RFC 6186: serwer wysyłki (submission)",
        "policy": "; Polityka MTA-STS (mailsvc podaje ją na porcie WWW) pod {url}:",
        "dkim_none": "Brak kluczy DKIM: poczta wychodzi bez podpisu, DMARC zostaje p=none. "
        "Utwórz klucz: mailsvc dkim keygen",
        "dkim_disabled": "DKIM jest wyłączony (dkim.enabled = false): DMARC zostaje p=none.",
        "dkim_key_missing": "Selektor {selector} nie ma pliku klucza: "
        "mailsvc dkim keygen --selector {selector}",
        "office_unsigned": "Adres biura {address} jest spoza domeny DKIM: rozesłania i "
        "przypomnienia od niego wyjdą bez podpisu.",
        "imap_assumed": "clients.imap_host nie jest ustawiony: przyjęto {host}:{port} (IMAPS).",
        "mta_sts_off": "MTA-STS jest wyłączony (mta_sts.mode pusty): nadawcy nie muszą "
        'szyfrować poczty do nas. Zacznij od mta_sts.mode = "testing".',
        "key_made": "Utworzono klucz {algorithm} selektora {selector}: {path}",
        "publish": "Opublikuj ten rekord, zanim dopiszesz selektor do [dkim]:",
        "add_config": "Dopisz do pliku konfiguracji:",
    },
    "en": {
        "header": "; DNS records for {domain} (paste into the zone; TTL {ttl} s)",
        "mx": "; MX: mail for the domain goes to this server",
        "spf": "; SPF: who may send mail from this domain",
        "dkim": "; DKIM: a selector's public key (signatures on outgoing mail)",
        "dmarc": "; DMARC: p=none without DKIM keys, p=reject once we sign; reports to rua",
        "dmarc_report": "; DMARC: the report address's domain agrees (goes in its own zone)",
        "mta_sts": "; MTA-STS: the policy's id (changes whenever the policy does)",
        "mta_sts_host": "; MTA-STS: the web server with the policy (its HTTPS certificate must "
        "name this host)",
        "tls_rpt": "; TLS-RPT: reports about TLS on mail sent to us",
        "autoconfig": "; Mail program autoconfiguration (Thunderbird)",
        "autodiscover": "; Autodiscover (Outlook)",
        "srv_autodiscover": "; Autodiscover through SRV",
        "srv_imap": "; RFC 6186: the IMAP server for mail programs",
        "srv_submit": "; RFC 6186: the submission server",
        "policy": "; The MTA-STS policy (mailsvc serves it on the web port) at {url}:",
        "dkim_none": "No DKIM keys: mail leaves unsigned and DMARC stays p=none. "
        "Make a key: mailsvc dkim keygen",
        "dkim_disabled": "DKIM is off (dkim.enabled = false): DMARC stays p=none.",
        "dkim_key_missing": "Selector {selector} has no key file: "
        "mailsvc dkim keygen --selector {selector}",
        "office_unsigned": "The office address {address} is outside the DKIM domain: "
        "distributions and reminders from it leave unsigned.",
        "imap_assumed": "clients.imap_host is not set: assumed {host}:{port} (IMAPS).",
        "mta_sts_off": "MTA-STS is off (mta_sts.mode is empty): senders need not encrypt "
        'mail to us. Start with mta_sts.mode = "testing".',
        "key_made": "Made the {algorithm} key of selector {selector}: {path}",
        "publish": "Publish this record before you list the selector in [dkim]:",
        "add_config": "Add to the configuration file:",
    },
}


def _t(settings: Settings, key: str, **values: Any) -> str:
    texts = _TEXT.get(settings.language, _TEXT["pl"])
    return texts[key].format(**values)


async def dns_plan(settings: Settings) -> DnsPlan:
    def read() -> dict[str, dkim_keys.PrivateKey | None]:
        return {s.name: dkim_keys.existing_key(settings, s) for s in settings.dkim.selectors}

    return plan(settings, await asyncio.to_thread(read))


def render_zone(settings: Settings, dns: DnsPlan) -> str:
    ttl = settings.dns.ttl
    lines = [_t(settings, "header", domain=dns.domain, ttl=ttl)]
    lines += [f"; ! {_t(settings, a.key, **a.values)}" for a in dns.advice]
    for record in dns.records:
        lines += ["", _t(settings, record.purpose)]
        lines.append(f"{record.name} {ttl} IN {record.type} {record.rdata()}")
    if dns.mta_sts_policy:
        url = f"https://mta-sts.{dns.domain}/.well-known/mta-sts.txt"
        lines += ["", _t(settings, "policy", url=url)]
        lines += [f";   {line}" for line in dns.mta_sts_policy.splitlines()]
    return "\n".join(lines)


def render_json(settings: Settings, dns: DnsPlan) -> str:
    return json.dumps(
        {
            "domain": dns.domain,
            "records": [
                {
                    "name": r.name,
                    "type": r.type,
                    "ttl": settings.dns.ttl,
                    "value": r.value,
                    "purpose": r.purpose,
                }
                for r in dns.records
            ],
            "advice": [_t(settings, a.key, **a.values) for a in dns.advice],
            "mta_sts_policy": dns.mta_sts_policy or None,
        },
        ensure_ascii=False,
        indent=2,
    )


def cmd_dns(settings: Settings, args: argparse.Namespace) -> int:
    dns = asyncio.run(dns_plan(settings))
    print(render_json(settings, dns) if args.json else render_zone(settings, dns))
    return 0


def _keygen_selector(settings: Settings, args: argparse.Namespace) -> DkimSelector:
    configured = {s.name: s for s in settings.dkim.selectors}
    wanted = _ALGORITHMS[args.algorithm] if args.algorithm else None
    if args.selector in configured:
        selector = configured[args.selector]
        if wanted is not None and wanted != selector.algorithm:
            raise MailsvcError(
                f"selector {selector.name} is configured for {selector.algorithm}, not {wanted}"
            )
        return selector
    algorithm = wanted or dkim_keys.RSA
    return DkimSelector(name=args.selector or default_selector_name(algorithm), algorithm=algorithm)


def default_selector_name(algorithm: str) -> str:
    """A new key's selector when none is named: ``rsa<YYYYMM>`` or ``ed<YYYYMM>``."""
    prefix = "ed" if algorithm == dkim_keys.ED25519 else "rsa"
    return f"{prefix}{datetime.now(UTC):%Y%m}"


def cmd_dkim(settings: Settings, args: argparse.Namespace) -> int:
    selector = _keygen_selector(settings, args)
    try:  # the selector's name must be one the configuration would accept
        validate(settings.with_changes(dkim={"selectors": (selector,)}))
    except MailsvcError as exc:
        raise MailsvcError(f"--selector {selector.name!r}: {exc}") from None
    path = settings.dkim_key_file(selector)
    private = dkim_keys.write_new_key(path, selector.algorithm)
    print(_t(settings, "key_made", algorithm=selector.algorithm, selector=selector.name, path=path))
    print(_t(settings, "publish"))
    record = f"{selector.name}._domainkey.{settings.dkim_domain}."
    txt = dkim_keys.public_record(private)
    quoted = " ".join(f'"{txt[i : i + 255]}"' for i in range(0, len(txt), 255))
    print(f"{record} {settings.dns.ttl} IN TXT {quoted}")
    if selector.name not in {s.name for s in settings.dkim.selectors}:
        print(_t(settings, "add_config"))
        print("[[dkim.selectors]]")
        print(f'name = "{selector.name}"')
        print(f'algorithm = "{selector.algorithm}"')
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dns",
        help="print the DNS records to publish: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV",
        epilog="example: mailsvc dns --json",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_dns)

    p = sub.add_parser("dkim", help="DKIM signing keys for outgoing mail")
    dsub = p.add_subparsers(dest="action", required=True)
    k = dsub.add_parser(
        "keygen",
        help="make a key (0600 under var_dir/secrets) and print its DNS record",
        epilog="example: mailsvc dkim keygen --selector ed202607 --algorithm ed25519",
    )
    k.add_argument("--selector", help="selector name (default: <algorithm><YYYYMM>)")
    k.add_argument(
        "--algorithm",
        choices=sorted(_ALGORITHMS),
        help="rsa (2048 bits, the default) or ed25519; a configured selector's by default",
    )
    k.set_defaults(func=cmd_dkim)
