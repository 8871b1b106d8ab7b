"""`mailsvc dns`: the records and how they are written (zone file and JSON, Polish and English);
the [dkim] and [dns] settings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsvc.cli.dns import render_json, render_zone
from mailsvc.config import DkimSelector, Settings, load_settings
from mailsvc.errors import ConfigError
from mailsvc.relay.dkim.keys import ED25519, RSA, PrivateKey, generate
from mailsvc.relay.dnsrecords import Record, mta_sts_policy, plan

RSA_KEY = generate(RSA)
ED_KEY = generate(ED25519)


def base(**changes: object) -> Settings:
    settings = Settings(domain="rada.example", office_address="biuro@rada.example")
    return settings.with_changes(**changes) if changes else settings


def by_purpose(settings: Settings, keys: dict[str, PrivateKey | None]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for record in plan(settings, keys).records:
        out.setdefault(record.purpose, []).append(record)
    return out


def test_without_keys_dmarc_is_p_none_and_nothing_else_is_missing() -> None:
    records = by_purpose(base(), {})
    assert [(r.name, r.type, r.value) for r in records["mx"]] == [
        ("rada.example.", "MX", "10 mail.rada.example.")
    ]
    assert records["spf"][0].value == "v=spf1 mx -all"
    assert "dkim" not in records
    assert records["dmarc"][0].name == "_dmarc.rada.example."
    assert records["dmarc"][0].value == "v=DMARC1; p=none; rua=mailto:biuro@rada.example"
    assert records["tls_rpt"][0].name == "_smtp._tls.rada.example."
    assert records["tls_rpt"][0].value == "v=TLSRPTv1; rua=mailto:biuro@rada.example"
    assert "mta_sts" not in records  # no policy is served: none to point to
    assert [(r.name, r.value) for r in records["autoconfig"] + records["autodiscover"]] == [
        ("autoconfig.rada.example.", "mail.rada.example."),
        ("autodiscover.rada.example.", "mail.rada.example."),
    ]
    assert records["srv_autodiscover"][0].value == "0 1 443 mail.rada.example."
    assert [a.key for a in plan(base(), {}).advice] == ["dkim_none", "mta_sts_off", "imap_assumed"]


def test_dkim_records_per_selector_and_p_reject_once_a_key_exists() -> None:
    settings = base(
        dkim={"selectors": (DkimSelector("rsa1"), DkimSelector("ed1", ED25519))},
        dns={"report_address": "dmarc@rada.example"},
    )
    records = by_purpose(settings, {"rsa1": RSA_KEY, "ed1": ED_KEY})
    rsa_record, ed_record = records["dkim"]
    assert rsa_record.name == "rsa1._domainkey.rada.example."
    assert rsa_record.value.startswith("v=DKIM1; k=rsa; p=MIIBIjANBg")
    assert isinstance(RSA_KEY, rsa.RSAPrivateKey) and isinstance(ED_KEY, ed25519.Ed25519PrivateKey)
    raw = base64.b64decode(ed_record.value.split("p=")[1])
    assert ed_record.name == "ed1._domainkey.rada.example." and len(raw) == 32
    assert records["dmarc"][0].value == "v=DMARC1; p=reject; rua=mailto:dmarc@rada.example"
    # One key missing: its record is not printed and the advice names it.
    dns = plan(settings, {"rsa1": RSA_KEY, "ed1": None})
    assert [r.name for r in dns.records if r.purpose == "dkim"] == [rsa_record.name]
    assert (dns.advice[0].key, dns.advice[0].values) == ("dkim_key_missing", {"selector": "ed1"})
    # DKIM switched off: nothing is signed, so DMARC must not say reject.
    off = by_purpose(settings.with_changes(dkim={"enabled": False}), {"rsa1": RSA_KEY})
    assert "p=none" in off["dmarc"][0].value


def test_spf_include_and_a_report_address_of_another_organisation() -> None:
    settings = base(
        dns={"spf_include": "_spf.dostawca.example", "report_address": "raporty@dmarc.example"}
    )
    records = by_purpose(settings, {})
    assert records["spf"][0].value == "v=spf1 mx include:_spf.dostawca.example -all"
    # RFC 7489 7.1: the other domain agrees to take our reports, in its own zone.
    (auth,) = records["dmarc_report"]
    assert (auth.name, auth.value) == ("rada.example._report._dmarc.dmarc.example.", "v=DMARC1")


def test_an_office_outside_the_dkim_domain_is_pointed_out() -> None:
    settings = base(
        office_address="biuro.rady@urzad.example", dkim={"selectors": (DkimSelector("rsa1"),)}
    )
    advice = plan(settings, {"rsa1": RSA_KEY}).advice
    assert [a.key for a in advice] == ["office_unsigned", "mta_sts_off", "imap_assumed"]


def test_client_srv_records_follow_the_clients_settings() -> None:
    settings = base(
        clients={
            "imap_host": "imap.rada.example",
            "imap_port": 993,
            "imap_security": "tls",
            "smtp_host": "smtp.rada.example",
            "smtp_port": 465,
            "smtp_security": "tls",
        },
        web={"public_url": "https://www.rada.example"},
    )
    records = by_purpose(settings, {})
    assert [(r.name, r.value) for r in records["srv_imap"] + records["srv_submit"]] == [
        ("_imaps._tcp.rada.example.", "0 1 993 imap.rada.example."),
        ("_submissions._tcp.rada.example.", "0 1 465 smtp.rada.example."),
    ]
    assert records["autoconfig"][0].value == "www.rada.example."
    starttls = base(clients={"imap_host": "imap.rada.example", "imap_security": "starttls"})
    assert by_purpose(starttls, {})["srv_imap"][0].value == "0 1 143 imap.rada.example."
    assert by_purpose(base(), {})["srv_submit"][0].name == "_submission._tcp.rada.example."


def test_the_mta_sts_id_changes_with_the_policy() -> None:
    testing, enforce = base(mta_sts={"mode": "testing"}), base(mta_sts={"mode": "enforce"})
    assert mta_sts_policy(enforce) == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.rada.example\r\nmax_age: 604800\r\n"
    )
    listed = base(
        mta_sts={"mode": "enforce", "mx": "MX1.rada.example., *.rada.example", "max_age": 86400}
    )
    assert mta_sts_policy(listed) == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.rada.example\r\nmx: *.rada.example\r\n"
        "max_age: 86400\r\n"
    )
    assert mta_sts_policy(base(mta_sts={"mode": "none"})) == (
        "version: STSv1\r\nmode: none\r\nmax_age: 604800\r\n"
    )
    ids = {by_purpose(s, {})["mta_sts"][0].value for s in (testing, enforce, listed, testing)}
    assert len(ids) == 3 and all(i.startswith("v=STSv1; id=") for i in ids)
    # The policy host points to the web server that serves it.
    assert [(r.name, r.type, r.value) for r in by_purpose(testing, {})["mta_sts_host"]] == [
        ("mta-sts.rada.example.", "CNAME", "mail.rada.example.")
    ]


def test_a_long_txt_record_is_split_into_strings_of_255() -> None:
    record = Record("x.", "TXT", "a" * 300, "dkim")
    assert record.rdata() == f'"{"a" * 255}" "{"a" * 45}"'
    assert Record("x.", "MX", "10 m.", "mx").rdata() == "10 m."


def test_zone_and_json_output_in_both_languages() -> None:
    settings = base(dkim={"selectors": (DkimSelector("rsa1"),)}, mta_sts={"mode": "testing"})
    dns = plan(settings, {"rsa1": RSA_KEY})
    zone = render_zone(settings, dns)
    assert "; Rekordy DNS dla rada.example" in zone
    assert "; DKIM: klucz publiczny selektora" in zone
    line = next(x for x in zone.splitlines() if x.startswith("rsa1._domainkey"))
    assert line.startswith('rsa1._domainkey.rada.example. 3600 IN TXT "v=DKIM1; k=rsa; p=')
    assert line.count('"') == 4  # a 2048-bit key needs two strings
    assert ";   mode: testing" in zone
    english = render_zone(settings.with_changes(language="en"), dns)
    assert "; DNS records for rada.example" in english and "Rekordy" not in english
    data = json.loads(render_json(settings, dns))
    assert data["domain"] == "rada.example"
    assert {r["type"] for r in data["records"]} == {"MX", "TXT", "CNAME", "SRV"}
    assert all(r["ttl"] == 3600 for r in data["records"])
    assert data["mta_sts_policy"].startswith("version: STSv1\r\n")
    # Off: neither the policy nor its record, but a word about it.
    off = plan(base(), {})
    assert "mode:" not in render_zone(base(), off) and "MTA-STS jest wyłączony" in render_zone(
        base(), off
    )
    assert json.loads(render_json(base(), off))["mta_sts_policy"] is None


# -- settings ------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailsvc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_selectors_from_tables_and_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[dkim]\ndomain = "rada.example"\n'
        '[[dkim.selectors]]\nname = "rsa2026"\n'
        '[[dkim.selectors]]\nname = "ed2026"\nalgorithm = "ed25519-sha256"\n'
        'key_file = "/etc/mailsvc/ed.pem"\n',
    )
    s = load_settings(path, env={})
    assert s.dkim.selectors == (
        DkimSelector("rsa2026", RSA, ""),
        DkimSelector("ed2026", ED25519, "/etc/mailsvc/ed.pem"),
    )
    assert s.dkim_domain == "rada.example"
    assert s.dkim_key_file(s.dkim.selectors[1]) == Path("/etc/mailsvc/ed.pem")
    env = {"MAILSVC_DKIM__SELECTORS": "a1:ed25519-sha256, b2"}
    assert [(x.name, x.algorithm) for x in load_settings(path, env=env).dkim.selectors] == [
        ("a1", ED25519),
        ("b2", RSA),
    ]
    assert load_settings(env={}).dkim.selectors == ()  # the embedded default signs nothing


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[dkim.selectors]]\nname = "A b"\n', "dkim.selectors: name = 'A b'"),
        ('[[dkim.selectors]]\nname = "x"\nalgorithm = "rsa"\n', "algorithm = 'rsa'"),
        ('[[dkim.selectors]]\nname = "x"\n[[dkim.selectors]]\nname = "x"\n', "listed twice"),
        ('[[dkim.selectors]]\nalgorithm = "rsa-sha256"\n', "expected a name"),
        ('[[dkim.selectors]]\nname = "x"\nkey = "y"\n', "dkim.selectors[0].key: unknown key"),
        ("[dkim]\nselectors = 3\n", "expected [[dkim.selectors]] tables"),
        ('[dns]\nmta_sts_mode = "testing"\n', "dns.mta_sts_mode: moved to mta_sts.mode"),
        ('[mta_sts]\nmode = "on"\n', "mta_sts.mode = 'on'"),
        ('[mta_sts]\nmx = "mail.example.org, not_a host"\n', "mta_sts.mx: 'not_a'"),
        ("[mta_sts]\nmax_age = 0\n", "mta_sts.max_age = 0"),
        ("[submission]\ntls_port = 2587\n", "submission.tls_port = 2587: already submission"),
        ('[dns]\nspf_include = "not a domain"\n', "dns.spf_include"),
        ('[dns]\nreport_address = "nobody"\n', "dns.report_address = 'nobody'"),
    ],
)
def test_wrong_dkim_and_dns_settings_are_one_line_errors(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    assert fragment in str(caught.value)
