"""The local stack against real slapd and Dovecot processes: no mocks."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap3
import pytest

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.stack import INSTALL_COMMAND, LocalStack, StackError, master_credentials
from provisioning.passwords import hash_password

# Not in the PostgreSQL pass (make test-postgresql): slapd and Dovecot only.
pytestmark = [pytest.mark.integration, pytest.mark.no_database]

SENDER = "resident@example.org"


# -- helpers -------------------------------------------------------------------------------


def our_processes(settings: Settings) -> dict[str, int]:
    """How many slapd and dovecot processes run with a command line naming this var_dir."""
    counts = {"slapd": 0, "dovecot": 0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(argv[0].decode()).name
        if name in counts and str(settings.var_dir).encode() in b" ".join(argv):
            counts[name] += 1
    return counts


def add_councillor(settings: Settings, local: str, password: str, *, disabled: bool = False) -> str:
    """Create an inetOrgPerson under the councillors OU, bound as the admin; return the address."""
    d = settings.directory
    address = f"{local}@{settings.domain}"
    attributes = {
        "cn": local,
        "sn": local,
        d.mail_attribute: address,
        "uid": local,
        "userPassword": hash_password(password),
    }
    if disabled:
        attributes[d.status_attribute] = d.disabled_value
    conn = ldap3.Connection(
        ldap3.Server(settings.ldap_url, get_info=ldap3.NONE),
        user=d.admin_dn,
        password=secret_store.admin_password(settings),
        auto_bind=True,
    )
    try:
        assert conn.add(f"uid={local},{d.councillors_dn}", [d.person_object_class], attributes), (
            conn.result
        )
    finally:
        conn.unbind()
    return address


class SourcedIMAP4(imaplib.IMAP4):
    """IMAP4 from a chosen loopback source address (Dovecot's penalties and allow_nets are
    per client address)."""

    def __init__(self, host: str, port: int, source: str, timeout: float) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        address = (self.host, self.port)
        return socket.create_connection(address, timeout, source_address=(self._source, 0))


# A refused login waits auth_failure_delay (2 s) plus Dovecot's growing penalty for its client
# address; tests that fail logins on purpose do so from their own address, so the penalty does
# not slow the logins of other tests from 127.0.0.1.
FAILING_SOURCE = "127.0.0.2"


def imap_login(settings: Settings, user: str, password: str, *, source: str = "127.0.0.1") -> int:
    """Log in and return the number of messages in INBOX; raises imaplib.IMAP4.error if refused."""
    host, port = settings.stack.host, settings.stack.imap_port
    timeout = 5 if source == "127.0.0.1" else 40
    with SourcedIMAP4(host, port, source, timeout) as imap:
        imap.login(user, password)
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK", data
        return int(data[0] or 0)


def lmtp_rcpt(settings: Settings, address: str) -> int:
    with smtplib.LMTP(settings.stack.host, settings.stack.lmtp_port, timeout=5) as lmtp:
        lmtp.ehlo()
        lmtp.mail(SENDER)
        code, _ = lmtp.rcpt(address)
        return code


def lmtp_deliver(settings: Settings, address: str) -> None:
    with smtplib.LMTP(settings.stack.host, settings.stack.lmtp_port, timeout=5) as lmtp:
        refused = lmtp.sendmail(
            SENDER, [address], f"From: {SENDER}\r\nTo: {address}\r\nSubject: hi\r\n\r\nhello\r\n"
        )
        assert refused == {}


def refuses_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# -- the session stack ---------------------------------------------------------------------


def test_up_returns_with_both_servers_answering(local_stack: LocalStack) -> None:
    statuses = local_stack.up()

    assert [(s.name, s.running) for s in statuses] == [("slapd", True), ("dovecot", True)]
    host = local_stack.settings.stack.host
    with socket.create_connection((host, local_stack.settings.stack.imap_port)) as sock:
        assert sock.recv(100).startswith(b"* OK")


def test_up_twice_leaves_exactly_one_slapd_and_one_dovecot(local_stack: LocalStack) -> None:
    pids_before = [s.pid for s in local_stack.status()]

    LocalStack(local_stack.settings).up()
    LocalStack(local_stack.settings).up()

    assert our_processes(local_stack.settings) == {"slapd": 1, "dovecot": 1}
    assert [s.pid for s in local_stack.status()] == pids_before


def test_status_reports_running_servers_with_their_ports(local_stack: LocalStack) -> None:
    stack = local_stack.settings.stack

    slapd, dovecot = local_stack.status()

    assert slapd.name == "slapd" and slapd.running and slapd.pid
    assert slapd.port_info == f"ldap {stack.host}:{stack.ldap_port}"
    assert dovecot.name == "dovecot" and dovecot.running and dovecot.pid
    assert dovecot.port_info == (
        f"imap {stack.host}:{stack.imap_port}, imaps {stack.host}:{stack.imaps_port}, "
        f"lmtp {stack.host}:{stack.lmtp_port}"
    )


def test_councillor_in_directory_logs_in_over_imap_and_is_accepted_at_lmtp(
    local_stack: LocalStack,
) -> None:
    settings = local_stack.settings
    address = add_councillor(settings, "anna.nowak", "anna-password-123456")

    assert imap_login(settings, address, "anna-password-123456") == 0
    assert imap_login(settings, address.upper(), "anna-password-123456") == 0
    assert lmtp_rcpt(settings, address) == 250
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, address, "wrong-password-123456", source=FAILING_SOURCE)


def test_unknown_address_is_refused_at_lmtp_rcpt_and_login(local_stack: LocalStack) -> None:
    settings = local_stack.settings
    unknown = f"nobody.here@{settings.domain}"

    assert lmtp_rcpt(settings, unknown) == 550
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, unknown, "whatever-password-1234", source=FAILING_SOURCE)


def test_disabled_councillor_is_refused_at_login_and_lmtp_rcpt(local_stack: LocalStack) -> None:
    settings = local_stack.settings
    address = add_councillor(settings, "jan.kowalski", "jan-password-1234567", disabled=True)

    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, address, "jan-password-1234567", source=FAILING_SOURCE)
    assert lmtp_rcpt(settings, address) == 550


def test_delivered_mail_is_readable_by_owner_and_master_user(local_stack: LocalStack) -> None:
    settings = local_stack.settings
    address = add_councillor(settings, "ewa.zielinska", "ewa-password-12345678")

    lmtp_deliver(settings, address)

    assert imap_login(settings, address, "ewa-password-12345678") == 1
    assert imap_login(settings, *master_credentials(settings, address)) == 1
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, f"{address}*master", "not-the-master-secret", source=FAILING_SOURCE)
    # The right master secret, but from another address than 127.0.0.1: refused (allow_nets).
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, *master_credentials(settings, address), source="127.0.0.3")


def search_as(settings: Settings, dn: str | None, password: str | None, uid: str) -> list[Any]:
    """Entries (with mail and userPassword) that ``dn`` may see when searching for ``uid``."""
    conn = ldap3.Connection(
        ldap3.Server(settings.ldap_url, get_info=ldap3.NONE),
        user=dn,
        password=password,
        auto_bind=True,
    )
    try:
        conn.search(
            settings.directory.councillors_dn,
            f"(uid={uid})",
            attributes=["mail", "userPassword"],
        )
        return [entry for entry in conn.response if entry["type"] == "searchResEntry"]
    finally:
        conn.unbind()


def test_directory_shows_entries_only_to_the_reader_and_passwords_to_nobody(
    local_stack: LocalStack,
) -> None:
    settings = local_stack.settings
    d = settings.directory
    add_councillor(settings, "piotr.wisniewski", "piotr-password-123456")
    add_councillor(settings, "olga.wojcik", "olga-password-1234567")

    [entry] = search_as(
        settings, d.reader_dn, secret_store.reader_password(settings), "piotr.wisniewski"
    )
    assert entry["attributes"]["mail"] == [f"piotr.wisniewski@{settings.domain}"]
    assert entry["attributes"]["userPassword"] == []
    assert search_as(settings, None, None, "piotr.wisniewski") == []
    olga_dn = f"uid=olga.wojcik,{d.councillors_dn}"
    assert search_as(settings, olga_dn, "olga-password-1234567", "piotr.wisniewski") == []


# -- private stacks: lifecycle ---------------------------------------------------------------


def test_down_stops_everything_and_up_again_keeps_the_directory(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings()
    stack = LocalStack(settings)
    started = time.monotonic()
    stack.up()
    cold_start = time.monotonic() - started
    address = add_councillor(settings, "maria.lewandowska", "maria-password-123456")

    assert stack.down() == ["dovecot", "slapd"]
    assert our_processes(settings) == {"slapd": 0, "dovecot": 0}
    assert not list((settings.var_dir / "run").glob("*.pid"))
    assert [s.running for s in stack.status()] == [False, False]
    assert stack.down() == []

    started = time.monotonic()
    stack.up()
    warm_start = time.monotonic() - started
    assert imap_login(settings, address, "maria-password-123456") == 0
    # Typically 0.1-0.3 s; a generous bound that still catches a start that waits on timeouts.
    assert cold_start < 3 and warm_start < 3, (cold_start, warm_start)


def test_stopped_service_answers_again_after_start_service(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings()
    stack = LocalStack(settings)
    stack.up()
    address = add_councillor(settings, "adam.mazur", "adam-password-1234567")
    host = settings.stack.host

    stack.stop_service("dovecot")
    assert refuses_connections(host, settings.stack.imap_port)
    assert our_processes(settings) == {"slapd": 1, "dovecot": 0}
    stack.start_service("dovecot")
    assert imap_login(settings, address, "adam-password-1234567") == 0

    stack.stop_service("slapd")
    assert refuses_connections(host, settings.stack.ldap_port)
    assert [s.running for s in stack.status()] == [False, True]
    # Directory down is a temporary failure, never "no such user" (Dovecot gives up after 4 s).
    assert lmtp_rcpt(settings, address) == 451
    stack.start_service("slapd")
    assert lmtp_rcpt(settings, address) == 250


def test_directory_values_with_quotes_backslashes_and_comment_marks_work_end_to_end(
    new_stack_settings: Callable[[], Settings],
) -> None:
    # Each value lands in slapd.conf, the base LDIF and dovecot-ldap.conf.ext; any of them
    # mangled and the reader cannot bind or search, or the filter of active councillors breaks
    # (a bare '#' in its constant used to start a comment in Dovecot's file: nobody got in).
    settings = new_stack_settings()
    base = settings.directory.base_dn
    settings = settings.with_changes(
        directory={
            "reader_dn": f'cn=mail\\"store\\5c #1,ou=sys,{base}',
            "reader_password": "pa\"ss\\word #1 'x' %u $y {z}\\",
            "councillors_rdn": 'ou=Radni \\"A\\"\\, #2',
            "disabled_value": "dis(abled) #3 \"x\" 'y' *\\%",
        }
    )
    LocalStack(settings).up()
    active = add_councillor(settings, "anna.nowak", "anna-password-123456")
    disabled = add_councillor(settings, "jan.kowalski", "jan-password-1234567", disabled=True)

    assert imap_login(settings, active, "anna-password-123456") == 0
    assert lmtp_rcpt(settings, active) == 250
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(settings, disabled, "jan-password-1234567")
    assert lmtp_rcpt(settings, disabled) == 550


def test_down_never_signals_a_process_that_took_over_a_recorded_pid(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings()
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        run_dir = settings.var_dir / "run"
        run_dir.mkdir()
        (run_dir / "slapd.pid").write_text(f"{stranger.pid}\n")

        assert LocalStack(settings).down() == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_port_held_by_another_program_is_named_and_nothing_is_left_running(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings()
    stack = settings.stack
    with socket.create_server((stack.host, stack.imap_port)):
        with pytest.raises(
            StackError, match=rf"imap port {stack.host}:{stack.imap_port} is already in use"
        ):
            LocalStack(settings).up()

    assert our_processes(settings) == {"slapd": 0, "dovecot": 0}


def test_missing_binaries_are_reported_with_the_install_command(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings().with_changes(stack={"slapd": "/nonexistent/slapd"})
    stack = LocalStack(settings)

    assert stack.missing_binaries() == ["/nonexistent/slapd"]
    with pytest.raises(StackError) as raised:
        stack.up()
    assert INSTALL_COMMAND in str(raised.value)


def test_unknown_service_name_is_refused(local_stack: LocalStack) -> None:
    with pytest.raises(StackError, match="unknown service"):
        local_stack.stop_service("postfix")


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",  # noqa: S104 - the case refused
        "192.0.2.10",
        "mail.example.org",
        "::",
    ],
)
def test_a_stack_host_off_this_machine_is_refused_before_anything_starts(
    new_stack_settings: Callable[[], Settings], host: str
) -> None:
    settings = new_stack_settings().with_changes(stack={"host": host})

    with pytest.raises(StackError, match=r"stack\.host = .*only on this machine"):
        LocalStack(settings).up()
    assert our_processes(settings) == {"slapd": 0, "dovecot": 0}


def test_a_refused_login_is_delayed_and_penalised(local_stack: LocalStack) -> None:
    settings = local_stack.settings
    address = add_councillor(settings, "ala.delay", "ala-password-12345678")
    # What the running Dovecot was started with: the failure delay, and no override turning
    # the anvil auth penalty off.
    paths = local_stack.paths
    started_with = paths.dovecot_conf.read_text() + paths.dovecot_mailsvc_conf.read_text()
    assert f"!include {paths.dovecot_mailsvc_conf}\n" in started_with
    assert "auth_failure_delay = 2 secs" in started_with
    assert "anvil-auth-penalty" not in started_with
    # Dovecot answers failures when its failure timer fires (every auth_failure_delay), so one
    # refusal waits between 0 and 2 s; three in a row from one address cannot all be quick.
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(imaplib.IMAP4.error):
            imap_login(settings, address, "wrong-password-123456", source="127.0.0.4")
    assert time.monotonic() - started >= 2.0
