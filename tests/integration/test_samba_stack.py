"""The local stack with stack.directory = "samba": a real Samba AD DC, provisioned once for this
module into a fresh var_dir (that takes a while), on a free loopback address of its own."""

from __future__ import annotations

import random
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import LDAPSocketOpenError

from mailsvc import secret_store
from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings
from mailsvc.stack import LocalStack, StackError, free_ports, samba
from mailsvc.stack.layout import Paths
from mailsvc.stack.ldaptls import VerifiedTls
from mailsvc.stack.supervise import port_in_use

from .test_cli import run_cli

# Not in the PostgreSQL pass (make test-postgresql): Samba's AD DC only.
pytestmark = [pytest.mark.integration, pytest.mark.no_database]

TIMINGS: dict[str, float] = {}


def free_samba_host() -> str:
    """A loopback address on which all of Samba's fixed ports are free (random, so that two
    test runs on one machine do not meet)."""
    for _ in range(50):
        host = f"127.{random.randint(64, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if not any(port_in_use(host, port) for _, port in samba.PORTS):
            return host
    raise AssertionError(f"ports {samba.PORTS} are taken on every loopback address tried")


def samba_processes(var_dir: Path) -> list[int]:
    """Samba processes that hold a file of this var_dir open (Samba rewrites its command
    line, so it is known by its executable and its files)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path((entry / "exe").readlink()).name != "samba":
                continue
            files = [str(fd.readlink()) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(f.startswith(f"{var_dir}/") for f in files):
            found.append(int(entry.name))
    return found


def refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


def connection(settings: Settings, user: str, url: str = "", ca_file: str = "") -> ldap3.Connection:
    ad = settings.samba_directory
    tls = VerifiedTls(Path(ca_file) if ca_file else ad.ca_file)
    server = ldap3.Server(url or ad.url, tls=tls, get_info=ldap3.NONE, connect_timeout=5)
    return ldap3.Connection(
        server, user=user, password=secret_store.samba_admin_password(settings), receive_timeout=10
    )


def domain_sid(settings: Settings) -> str:
    conn = connection(settings, settings.samba_directory.admin_principal)
    assert conn.bind(), conn.result
    try:
        base = settings.samba_directory.base_dn
        assert conn.search(base, "(objectClass=domain)", ldap3.BASE, attributes=["objectSid"])
        return str(conn.entries[0].objectSid.value)
    finally:
        conn.unbind()


@pytest.fixture(scope="module")
def samba_settings() -> Iterator[Settings]:
    ldap_port, imap_port, lmtp_port, smtp_port = free_ports(4)
    settings = load_settings(DEFAULT_CONFIG, env={}).with_changes(
        var_dir=Path(tempfile.mkdtemp(prefix="ms", dir="/tmp")),
        language="en",
        stack={
            "directory": "samba",
            "samba_host": free_samba_host(),
            "ldap_port": ldap_port,
            "imap_port": imap_port,
            "lmtp_port": lmtp_port,
        },
        smtp={"port": smtp_port},
    )
    stack = LocalStack(settings)
    started = time.monotonic()
    try:
        for attempt in range(4):
            try:
                stack.up()  # provisions the domain: the slow part, once for the module
                break
            except StackError as exc:
                # Dovecot's ports were free when chosen, a minute of provisioning ago; another
                # test process may have taken one since. Fresh ones, and up again (the domain
                # is made already).
                if "already in use" not in str(exc) or attempt == 3:
                    raise
                imap_port, lmtp_port, smtp_port = free_ports(3)
                settings = settings.with_changes(
                    stack={"imap_port": imap_port, "lmtp_port": lmtp_port},
                    smtp={"port": smtp_port},
                )
                stack = LocalStack(settings)
        TIMINGS["first up (provision + start)"] = time.monotonic() - started
        yield settings
    finally:
        stack.down()
        shutil.rmtree(settings.var_dir, ignore_errors=True)
        print(f"\nsamba stack timings: {TIMINGS}")


@pytest.fixture
def stack(samba_settings: Settings) -> LocalStack:
    """The module's stack, running (a test before may have stopped it)."""
    stack = LocalStack(samba_settings)
    stack.up()
    return stack


def test_up_runs_samba_instead_of_slapd_with_dovecot(stack: LocalStack) -> None:
    settings = stack.settings
    host = settings.stack.samba_host
    statuses = {st.name: st for st in stack.status()}
    assert list(statuses) == ["samba", "dovecot"]
    assert all(st.running for st in statuses.values()), statuses
    assert statuses["samba"].port_info == f"ldaps {host}:636, ldap {host}:389"
    assert refuses(settings.stack.host, settings.stack.ldap_port)  # no slapd
    # Everything Samba made is under var_dir/samba, its smb.conf included.
    assert (settings.var_dir / "samba" / "private" / "sam.ldb").is_file()
    assert (settings.var_dir / "samba" / "provisioned").read_text().strip() == "RADA.MIASTO.EXAMPLE"


def test_samba_is_found_again_when_its_pid_file_is_lost(stack: LocalStack) -> None:
    (pid,) = [st.pid for st in stack.status() if st.name == "samba"]
    pid_file = stack.settings.var_dir / "run" / "samba.pid"
    pid_file.unlink()
    # Its command line reads "samba: root process": it is known by its open database.
    assert [st.pid for st in stack.status() if st.name == "samba"] == [pid]
    assert pid_file.read_text().strip() == str(pid)


@pytest.mark.parametrize("user", ["principal", "dn"])
def test_ldaps_bind_as_administrator_and_search_under_the_base_dn(
    stack: LocalStack, user: str
) -> None:
    ad = stack.settings.samba_directory
    conn = connection(stack.settings, ad.admin_principal if user == "principal" else ad.admin_dn)
    assert conn.bind(), conn.result
    try:
        assert conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["defaultNamingContext"])
        assert conn.entries[0].defaultNamingContext.value == ad.base_dn
        assert conn.search(ad.base_dn, "(sAMAccountName=Administrator)", attributes=["cn"])
        assert [entry.entry_dn for entry in conn.entries] == [ad.admin_dn]
        # The RFC 2307 attributes are in the schema (provisioned with --use-rfc2307).
        assert conn.search(
            f"CN=Schema,CN=Configuration,{ad.base_dn}", "(lDAPDisplayName=uidNumber)"
        )
        assert len(conn.entries) == 1
    finally:
        conn.unbind()


def test_the_certificate_is_verified_against_the_stack_ca_file(
    stack: LocalStack, tmp_path: Path
) -> None:
    # A certificate with the very same names from another key is no substitute for the one the
    # stack made: the bind stops at the TLS handshake.
    settings = stack.settings
    other = Paths.of(tmp_path)
    other.samba_tls_cert.parent.mkdir(parents=True)
    samba.ensure_certificate(other, settings.stack.samba_host, "mailsvc-dc.rada.miasto.example")
    ad = settings.samba_directory
    conn = connection(settings, ad.admin_principal, ca_file=str(other.samba_tls_cert))
    with pytest.raises(LDAPSocketOpenError, match="CERTIFICATE_VERIFY_FAILED"):
        conn.bind()


def test_plain_ldap_refuses_simple_binds(stack: LocalStack) -> None:
    ad = stack.settings.samba_directory
    url = f"ldap://{stack.settings.stack.samba_host}:389"
    conn = connection(stack.settings, ad.admin_principal, url=url)
    try:
        assert not conn.bind()
        assert conn.result["description"] == "strongerAuthRequired"
    finally:
        conn.unbind()


def test_a_different_administrator_password_is_a_clear_error(stack: LocalStack) -> None:
    wrong = stack.settings.with_changes(directory={"admin_password": "Wrong-Pass-1234"})
    with pytest.raises(StackError, match="provisioned with another Administrator password"):
        LocalStack(wrong).up()


def test_stack_status_shows_samba_with_its_address_and_bind_settings(stack: LocalStack) -> None:
    settings = stack.settings
    host = settings.stack.samba_host
    env = {"MAILSVC_STACK__DIRECTORY": "samba", "MAILSVC_STACK__SAMBA_HOST": host}
    proc = run_cli(settings, "stack", "status", MAILSVC_LANGUAGE="en", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["samba", "running"]
    assert lines[0].endswith(f"ldaps {host}:636, ldap {host}:389")
    assert lines[1].split()[:2] == ["dovecot", "running"]
    ad = settings.samba_directory
    assert f"ldaps://{host}:636  base {ad.base_dn}" in proc.stdout
    assert f"service account {settings.ldap.admin_dn} (rights on " in proc.stdout
    assert f"domain administrator {ad.admin_principal}" in proc.stdout
    assert str(settings.var_dir / "secrets" / "samba-admin") in proc.stdout
    assert str(settings.var_dir / "secrets" / "ldap-admin") in proc.stdout
    assert f"directory.ca_file): {ad.ca_file}" in proc.stdout
    assert secret_store.samba_admin_password(settings) not in proc.stdout
    assert secret_store.admin_password(settings) not in proc.stdout


def test_down_leaves_no_samba_process_and_up_reuses_the_domain(stack: LocalStack) -> None:
    settings = stack.settings
    host = settings.stack.samba_host
    sid = domain_sid(settings)
    provision_log = settings.var_dir / "log" / "samba-provision.log"
    provisioned_at = provision_log.stat().st_mtime_ns
    assert samba_processes(settings.var_dir)

    started = time.monotonic()
    assert stack.down() == ["dovecot", "samba"]
    TIMINGS["down"] = time.monotonic() - started
    assert samba_processes(settings.var_dir) == []
    assert all(refuses(host, port) for _, port in samba.PORTS)
    assert not any(st.running for st in stack.status())

    started = time.monotonic()
    stack.up()
    TIMINGS["second up (no provisioning)"] = time.monotonic() - started
    assert provision_log.stat().st_mtime_ns == provisioned_at  # samba-tool did not run again
    assert domain_sid(settings) == sid  # the same domain, not a new one
    assert TIMINGS["second up (no provisioning)"] < settings.stack.start_timeout


def _as_service(settings: Settings) -> ldap3.Connection:
    d = settings.ldap
    conn = connection(settings, d.admin_dn)
    conn.password = secret_store.admin_password(settings)
    assert conn.bind(), conn.result
    return conn


def test_the_service_account_is_no_domain_admin_and_may_touch_only_its_containers(
    stack: LocalStack,
) -> None:
    settings = stack.settings
    d, ad = settings.ldap, settings.samba_directory
    conn = _as_service(settings)
    try:
        # Not in any administrators' group.
        assert conn.search(d.admin_dn, "(objectClass=*)", ldap3.BASE, attributes=["memberOf"])
        assert [str(g) for g in conn.entries[0].memberOf.values] == []
        # Outside its containers it may read but not create, change or remove.
        values = {"sAMAccountName": "intruz", "unicodePwd": '"Zle-Haslo-123"'.encode("utf-16-le")}
        assert not conn.add(f"CN=intruz,CN=Users,{ad.base_dn}", ["user"], values)
        assert conn.result["description"] == "insufficientAccessRights"
        assert not conn.modify(ad.admin_dn, {"description": [(ldap3.MODIFY_REPLACE, ["x"])]})
        assert conn.result["description"] == "insufficientAccessRights"
        # Inside them it may, a user in the councillors' container and a group in the groups'.
        dn = f"CN=proba.konta,{d.councillors_dn}"
        password = '"Proba-Konta-123"'.encode("utf-16-le")
        person = {"sAMAccountName": "proba.konta", "unicodePwd": password}
        assert conn.add(dn, ["user"], {**person, "userAccountControl": "512"}), conn.result
        change = {"unicodePwd": [(ldap3.MODIFY_REPLACE, ['"Inne-Haslo-456"'.encode("utf-16-le")])]}
        assert conn.modify(dn, change), conn.result  # the Reset Password right
        assert conn.delete(dn), conn.result
        group = f"CN=proba-grupy,{d.groups_dn}"
        assert conn.add(group, ["group"], {"sAMAccountName": "g-proba"}), conn.result
        assert conn.delete(group), conn.result
    finally:
        conn.unbind()


def test_check_says_which_right_the_service_account_lacks(stack: LocalStack) -> None:
    settings = stack.settings
    proc = run_cli(settings, "check", "--no-dns", MAILSVC_LANGUAGE="en")
    rights = [line for line in proc.stdout.splitlines() if "directory-rights" in line]
    assert len(rights) == 1 and "OK" in rights[0], proc.stdout + proc.stderr
    # An account of the domain without the delegation: created by the Administrator.
    ad = settings.samba_directory
    admin = connection(settings, ad.admin_principal)
    assert admin.bind()
    plain = f"CN=bez-uprawnien,CN=Users,{ad.base_dn}"
    password = "Bez-Uprawnien-1234"
    values = {
        "sAMAccountName": "bez-uprawnien",
        "unicodePwd": f'"{password}"'.encode("utf-16-le"),
        "userAccountControl": "66048",
    }
    try:
        assert admin.add(plain, ["user"], values), admin.result
        proc = run_cli(
            settings,
            "check",
            "--no-dns",
            MAILSVC_LANGUAGE="en",
            MAILSVC_DIRECTORY__ADMIN_DN=plain,
            MAILSVC_DIRECTORY__ADMIN_PASSWORD=password,
        )
        assert proc.returncode != 0
        (line,) = [line for line in proc.stdout.splitlines() if "directory-rights" in line]
        assert "FAIL" in line and f"{plain} lacks rights the service needs" in line
        d = settings.ldap
        for dn, cls in ((d.councillors_dn, "user"), (d.staff_dn, "user"), (d.groups_dn, "group")):
            assert f"cannot create {cls} objects in {dn}" in line
    finally:
        admin.delete(plain)
        admin.unbind()


async def test_group_members_handed_out_in_slices_are_read_to_the_end(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Active Directory gives a long member list in slices ("member;range=0-1499"); Samba
    does so when asked for a slice, which stands in for a group past MaxValRange here."""
    from mailsvc.app import open_directory
    from provisioning.directory import bulk
    from provisioning.directory.bulk import list_groups

    slices: list[int] = []
    next_slice = bulk._next_slice

    async def counted(*args: Any) -> int | None:
        slices.append(args[4])  # the low end asked for
        return await next_slice(*args)

    monkeypatch.setattr(bulk, "_next_slice", counted)

    settings = stack.settings
    d, ad = settings.ldap, settings.samba_directory
    admin = connection(settings, ad.admin_principal)
    assert admin.bind()
    assert admin.search(f"CN=Users,{ad.base_dn}", "(objectClass=*)", ldap3.LEVEL)
    everyone = sorted(entry.entry_dn for entry in admin.entries)
    assert len(everyone) > 15, everyone  # the built-in accounts and groups of a new domain
    group = f"CN=wielu-czlonkow,{d.groups_dn}"
    conn = _as_service(settings)
    try:
        values = {"sAMAccountName": "g-wielu", "member": everyone}
        assert conn.add(group, ["group"], values), conn.result
        directory = open_directory(settings)
        try:
            config, context = directory.config, directory.ssl_context()
            for slice_size in (4, 7, len(everyone), None):  # several, one exact, unasked
                slices.clear()
                groups = await list_groups(config, context, slice_size=slice_size)
                found = {g.dn.lower(): g.members for g in groups}
                assert found[group.lower()] == {dn.lower() for dn in everyone}, slice_size
                if slice_size is not None:  # every slice after the first was asked for
                    size = len(everyone)
                    assert slices == list(range(slice_size, size, slice_size)), slice_size
        finally:
            await directory.close()
    finally:
        conn.delete(group)
        conn.unbind()
        admin.unbind()
