"""The generated configuration files as the real slapd, Dovecot and Samba parsers read them.

slapd converts slapd.conf into cn=config (slaptest -F), which shows each directive's value as
slapd understood it; doveconf prints dovecot.conf's settings, testparm those of smb.conf. Values
full of quotes, backslashes and would-be directives must come back exactly, and nothing else must
appear.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from mailsvc.stack import configs
from mailsvc.stack.configs import DovecotIdentity
from mailsvc.stack.layout import Paths
from mailsvc.stack.ldif import dn_key, parse_dn
from tests.unit.stack.scenarios import ROOTPW_HASH, default_settings

# Not in the PostgreSQL pass (make test-postgresql): configuration files only.
pytestmark = [pytest.mark.integration, pytest.mark.no_database]

# Valid DNs whose values hold what slapd.conf's quoting must carry: quotes, backslashes, '#',
# an escaped comma, and text that would be an access rule of its own if it got out.
BASE_DN = 'o=Rada \\"Miasta\\" #1\\\\ \\, by * write'
ADMIN_DN = f'cn=ad\\"min\\\\,{BASE_DN}'
READER_DN = f'cn=rd\\" by * write\\\\,ou=sys,{BASE_DN}'


def read_ldif(path: Path) -> dict[str, list[str]]:
    """Attribute -> values of a one-entry LDIF file (folded lines, base64 values)."""
    attributes: dict[str, list[str]] = {}
    unfolded = path.read_text(encoding="utf-8").replace("\n ", "")
    for line in unfolded.splitlines():
        if not line or line.startswith("#"):
            continue
        attr, _, value = line.partition(":")
        if value.startswith(":"):
            value = base64.b64decode(value[1:].strip()).decode("utf-8")
        else:
            value = value.strip()
        attributes.setdefault(attr, []).append(value)
    return attributes


def test_slapd_reads_hostile_directory_values_back_exactly(tmp_path: Path) -> None:
    settings = default_settings().with_changes(
        var_dir=tmp_path,
        directory={"base_dn": BASE_DN, "admin_dn": ADMIN_DN, "reader_dn": READER_DN},
    )
    stack = settings.stack
    paths = Paths.of(tmp_path)
    paths.ldap_data.mkdir(parents=True)
    paths.slapd_conf.write_text(configs.slapd_conf(settings, paths, ROOTPW_HASH))
    # slaptest opens the database read-only: it must exist, empty.
    subprocess.run([stack.slapadd, "-f", paths.slapd_conf, "-l", "/dev/null"], check=True)
    converted = tmp_path / "cn=config"
    converted.mkdir()
    subprocess.run(
        [stack.slaptest, "-f", paths.slapd_conf, "-F", converted],
        check=True,
        capture_output=True,
    )

    database = read_ldif(converted / "cn=config" / "olcDatabase={1}mdb.ldif")
    assert [parse_dn(dn) for dn in database["olcSuffix"]] == [parse_dn(BASE_DN)]
    assert [parse_dn(dn) for dn in database["olcRootDN"]] == [parse_dn(ADMIN_DN)]
    assert database["olcRootPW"] == [ROOTPW_HASH]
    assert database["olcDbDirectory"] == [str(paths.ldap_data)]
    passwords, everything = database["olcAccess"]
    assert passwords == "{0}to attrs=userPassword  by self write  by anonymous auth  by * none"
    prefix, reader, suffix = everything.split('"')  # slapd re-quotes the normalised DN
    assert (prefix, suffix) == ("{1}to *  by dn.base=", " read  by * none")
    assert dn_key(parse_dn(reader)) == dn_key(parse_dn(READER_DN))


def test_dovecot_reads_the_generated_dovecot_conf_as_intended(tmp_path: Path) -> None:
    settings = default_settings().with_changes(
        var_dir=tmp_path, stack={"host": "::1", "imap_port": 1144, "lmtp_port": 2425}
    )
    paths = Paths.of(tmp_path)
    who = DovecotIdentity.current()
    conf = tmp_path / "dovecot.conf"
    conf.write_text(configs.dovecot_conf(paths, who, tmp_path / "mailsvc.conf"))
    (tmp_path / "mailsvc.conf").write_text(configs.dovecot_mailsvc_conf(settings, paths, who))

    def setting(*names: str) -> list[str]:
        result = subprocess.run(
            ["doveconf", "-c", conf, "-h", *names], check=True, capture_output=True, text=True
        )
        return result.stdout.splitlines()

    assert setting("listen", "base_dir", "mail_location", "first_valid_uid") == [
        "::1",
        str(paths.dovecot_base),
        f"maildir:{paths.mail_root}/%d/%n",
        str(who.mail_uid),
    ]
    assert setting(
        "service/imap-login/inet_listener/imap/port",
        "service/lmtp/inet_listener/lmtp/port",
        "auth_master_user_separator",
        "passdb/0/args",
        "passdb/1/args",
        "userdb/0/args",
    ) == [
        "1144",
        "2425",
        "*",
        f"scheme=SSHA {paths.master_users}",
        str(paths.dovecot_ldap_conf),
        str(paths.dovecot_ldap_conf),
    ]


def test_samba_reads_the_generated_smb_conf_as_intended(tmp_path: Path) -> None:
    settings = default_settings().with_changes(
        var_dir=tmp_path, domain="rada.gmina-przykladowa.example", stack={"samba_host": "127.9.8.7"}
    )
    paths = Paths.of(tmp_path)
    for sub in ("state", "cache", "run"):  # testparm fails without them
        (paths.samba_dir / sub).mkdir(parents=True)
    conf = tmp_path / "smb.conf"
    conf.write_text(configs.smb_conf(settings, paths))

    def setting(name: str, section: str = "global") -> str:
        result = subprocess.run(
            [
                "testparm",
                "-s",
                "--suppress-prompt",
                f"--section-name={section}",
                f"--parameter-name={name}",
                conf,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    samba_dir = paths.samba_dir
    expected = {
        "server role": "active directory domain controller",
        "realm": "RADA.GMINA-PRZYKLADOWA.EXAMPLE",
        "workgroup": "RADA",
        "netbios name": "MAILSVC-DC",
        "server services": "ldap",
        "interfaces": "127.9.8.7/8",
        "bind interfaces only": "Yes",
        "tls enabled": "Yes",
        "tls certfile": str(paths.samba_tls_cert),
        "tls keyfile": str(paths.samba_tls_key),
        "ldap server require strong auth": "Yes",
        "private dir": f"{samba_dir}/private",
        "lock directory": str(samba_dir),
        "state directory": f"{samba_dir}/state",
        "cache directory": f"{samba_dir}/cache",
        "pid directory": f"{samba_dir}/run",
        "binddns dir": f"{samba_dir}/bind-dns",
        "log file": str(paths.log("samba")),
    }
    assert {name: setting(name) for name in expected} == expected
    assert setting("path", "netlogon") == (
        f"{samba_dir}/state/sysvol/rada.gmina-przykladowa.example/scripts"
    )
