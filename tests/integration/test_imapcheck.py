"""The IMAP "opened" check against the real local Dovecot, logged in as its master user.

The councillor's side (reading, moving, deleting) is played by aioimaplib, a client we do not
write, logged in with the councillor's own password. Small scripted servers in the test's loop
cover what Dovecot cannot be made to do: never greet, fall silent, list names as literals, and
count concurrent connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aioimaplib
import pytest

from mailsvc.config import Settings
from mailsvc.directory.councillors import CreatedAccount
from mailsvc.receipts.imapcheck import (
    SeenCheckFailure,
    SeenResult,
    check_many,
    check_seen,
    decode_mailbox_name,
    encode_mailbox_name,
)
from mailsvc.relay.delivery.lmtp import LmtpClient
from mailsvc.stack import free_ports, master_credentials

# The check reads Dovecot only; the database gets the audit rows of the councillors made.
pytestmark = [pytest.mark.integration, pytest.mark.no_database]

# "Sesje Rady.Wrzesień" in modified UTF-7, written out here rather than made by the code under
# test; Dovecot's maildir layout uses "." between folder levels.
WRZESIEN_WIRE = "Sesje Rady.Wrzesie&AUQ-"
WRZESIEN = "Sesje Rady.Wrzesień"
SENDER = "biuro@rada.miasto.example"


# -- helpers -------------------------------------------------------------------------------


def message_id(tag: str, account: CreatedAccount) -> str:
    local = account.address.split("@")[0]
    return f"<dist-{tag}.{local}@rada.miasto.example>"


async def deliver(settings: Settings, account: CreatedAccount, *message_ids: str) -> None:
    """Put messages straight into the mailbox over LMTP, each with its own Message-ID.

    Written out by hand: the email package would cut an unusual id such as one with a backslash.
    """
    client = LmtpClient(settings.stack.host, settings.stack.lmtp_port, timeout=10)
    try:
        for number, mid in enumerate(message_ids, 1):
            message = (
                "From: Biuro Rady <biuro@rada.miasto.example>\r\n"
                f"To: {account.address}\r\n"
                f"Subject: Zawiadomienie o sesji nr {number}\r\n"
                f"Message-ID: {mid}\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n"
                "\r\n"
                "Zapraszam na sesję Rady Miasta.\r\n"
            ).encode()
            replies = await client.deliver(SENDER, [account.address], message)
            assert replies[account.address].ok, replies
    finally:
        await client.close()


def ok(response: Any) -> Any:
    assert response.result == "OK", response
    return response


@asynccontextmanager
async def as_councillor(
    settings: Settings, account: CreatedAccount, folder: str = "INBOX"
) -> AsyncIterator[aioimaplib.IMAP4]:
    """The councillor's own mail client, with ``folder`` selected (read-write)."""
    client = aioimaplib.IMAP4(settings.stack.host, settings.stack.imap_port, timeout=10)
    await client.wait_hello_from_server()
    ok(await client.login(account.address, account.password))
    ok(await client.select(f'"{folder}"'))
    try:
        yield client
    finally:
        await client.logout()


async def uid_of(client: aioimaplib.IMAP4, mid: str) -> str:
    response = ok(await client.uid_search("HEADER", "Message-ID", f'"{mid}"', charset=None))
    uids = response.lines[0].split()
    assert len(uids) == 1, response
    return str(uids[0].decode())


async def read_body(client: aioimaplib.IMAP4, mid: str) -> bytes:
    """What opening a message does: FETCH BODY[] (not PEEK), which sets \\Seen."""
    response = ok(await client.uid("fetch", await uid_of(client, mid), "(BODY[])"))
    body = b"".join(bytes(line) for line in response.lines if isinstance(line, bytearray))
    assert mid.encode() in body
    return body


async def flags_seen_by_councillor(settings: Settings, account: CreatedAccount, mid: str) -> bytes:
    async with as_councillor(settings, account) as client:
        response = ok(await client.uid("fetch", await uid_of(client, mid), "(FLAGS)"))
        return b" ".join(bytes(line) for line in response.lines)


async def check(settings: Settings, account: CreatedAccount, ids: Iterable[str]) -> SeenResult:
    login, password = master_credentials(settings, account.address)
    return await check_seen(
        settings.stack.host, settings.stack.imap_port, login, password, account.address, list(ids)
    )


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on a free loopback port; on exit wait for every connection to end."""
    handlers: list[asyncio.Task[None]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await handler(reader, writer)
        except ConnectionResetError:
            pass  # the client dropped the connection with data unread: its business
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers)
    finally:
        server.close()
        await server.wait_closed()


# -- the codec for folder names ------------------------------------------------------------


def python_utf7_oracle(name: str) -> bytes:
    """Modified UTF-7 derived from the standard library's UTF-7 codec, one character at a time."""
    out = b""
    run = ""
    for ch in [*name, None]:
        if ch is not None and not 0x20 <= ord(ch) <= 0x7E:
            run += ch
            continue
        if run:
            packed = base64.b64encode(run.encode("utf-16-be")).rstrip(b"=")
            out += b"&" + packed.replace(b"/", b",") + b"-"
            run = ""
        if ch is not None:
            out += b"&-" if ch == "&" else ch.encode("ascii")
    return out


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        (WRZESIEN, WRZESIEN_WIRE.encode()),
        ("INBOX", b"INBOX"),
        ("Ważne & pilne", b"Wa&AXw-ne &- pilne"),
        ("Łukasz Żółć", b"&AUE-ukasz &AXsA8wFCAQc-"),
        ("日本語", b"&ZeVnLIqe-"),  # RFC 3501's own example
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # ditto: "," for "/"
    ],
)
def test_folder_names_round_trip_through_modified_utf7(name: str, wire: bytes) -> None:
    assert encode_mailbox_name(name) == wire
    assert python_utf7_oracle(name) == wire
    assert decode_mailbox_name(wire) == name


@pytest.mark.parametrize("bad", [b"a&b", b"&AUQ", b"&A-", "ń".encode()])
def test_malformed_modified_utf7_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="modified UTF-7"):
        decode_mailbox_name(bad)


# -- the check against the real Dovecot ----------------------------------------------------


async def test_seen_follows_reading_moving_and_deleting_without_the_check_setting_it(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Łukasz", "Żółć")
    first, second, third = (message_id(t, account) for t in ("sesja-1", "sesja-2", "sesja-3"))
    never = message_id("never-sent", account)
    await deliver(settings, account, first, second, third)

    result = await check(settings, account, [first, second, third, never])
    assert result.error is None and result.failure is None
    assert result.seen == {}
    assert result.unseen == {first, second, third}
    assert result.missing == {never}

    # Checking again changes nothing, and the councillor's own client sees no \Seen either.
    assert await check(settings, account, [first, second, third]) == await check(
        settings, account, [first, second, third]
    )
    assert b"\\Seen" not in await flags_seen_by_councillor(settings, account, first)

    async with as_councillor(settings, account) as client:
        await read_body(client, first)
    result = await check(settings, account, [first, second, third, never])
    assert result.seen == {first: "INBOX"}
    assert result.unseen == {second, third}
    assert result.missing == {never}
    assert await check(settings, account, [second]) == await check(settings, account, [second])
    assert b"\\Seen" not in await flags_seen_by_councillor(settings, account, second)

    # Moved to a folder with a Polish name: still found, seen or not.
    async with as_councillor(settings, account) as client:
        ok(await client.create(f'"{WRZESIEN_WIRE}"'))
        ok(await client.uid("move", await uid_of(client, first), f'"{WRZESIEN_WIRE}"'))
        ok(await client.uid("move", await uid_of(client, second), f'"{WRZESIEN_WIRE}"'))
        # Deleted the old way: flagged, then expunged.
        ok(await client.uid("store", await uid_of(client, third), "+FLAGS", "(\\Deleted)"))
        ok(await client.expunge())
    result = await check(settings, account, [first, second, third])
    assert result.seen == {first: WRZESIEN}
    assert result.unseen == {second}
    assert result.missing == {third}

    async with as_councillor(settings, account, WRZESIEN_WIRE) as client:
        await read_body(client, second)
    result = await check(settings, account, [first, second])
    assert result.seen == {first: WRZESIEN, second: WRZESIEN}
    assert result.unseen == set() and result.missing == set()


async def test_a_seen_copy_in_any_folder_wins_over_an_unseen_one_in_inbox(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Anna", "Wiśniewska")
    mid = message_id("kopia", account)
    await deliver(settings, account, mid)
    # A folder name with "* " in it, which aioimaplib 2.0 would mangle when listing folders.
    folder = "Pilne * sesje"
    async with as_councillor(settings, account) as client:
        ok(await client.create(f'"{folder}"'))
        ok(await client.uid("copy", await uid_of(client, mid), f'"{folder}"'))
    async with as_councillor(settings, account, folder) as client:
        await read_body(client, mid)

    result = await check(settings, account, [mid])
    assert result.seen == {mid: folder}
    assert result.unseen == set() and result.missing == set()


async def test_unsafe_message_ids_are_rejected_not_sent(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Jan", "Kowalski")
    good = message_id("ok", account)
    backslash = "<back\\slash@rada.miasto.example>"
    await deliver(settings, account, good, backslash)
    unsafe = [
        '<a" OR ALL "@x>',  # a quote would end the string and add a search key
        "<a@x>\r\nc1 LOGOUT",  # CR LF would end the command line
        "<zażółć@x>",  # not ASCII
        "no-brackets@x",
    ]
    result = await check(settings, account, [good, backslash, *unsafe])
    assert result.error is None
    assert result.unseen == {good, backslash}  # a backslash is escaped and found exactly
    assert result.rejected == set(unsafe)
    assert result.missing == set()


async def test_wrong_master_secret_is_reported_as_refused_not_raised(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Ewa", "Nowak")
    mid = message_id("x", account)
    await deliver(settings, account, mid)
    login, _ = master_credentials(settings, account.address)
    result = await check_seen(
        settings.stack.host, settings.stack.imap_port, login, "wrong", account.address, [mid]
    )
    assert result.failure is SeenCheckFailure.LOGIN_REFUSED
    assert result.error is not None and "refused" in result.error
    assert result.seen == {} and result.unseen == set() and result.missing == set()


async def test_master_login_for_an_unknown_mailbox_is_reported_unavailable(
    settings: Settings, directory: Any
) -> None:
    address = f"nikt@{settings.domain}"
    login, password = master_credentials(settings, address)
    result = await check_seen(
        settings.stack.host, settings.stack.imap_port, login, password, address, ["<a@b>"]
    )
    assert result.failure is SeenCheckFailure.LOGIN_UNAVAILABLE
    assert result.missing == set()


async def test_a_closed_port_is_unreachable() -> None:
    (port,) = free_ports(1)
    result = await check_seen("127.0.0.1", port, "u*master", "p", "u@x", ["<a@b>"], timeout=2)
    assert result.failure is SeenCheckFailure.UNREACHABLE
    assert result.error is not None and "unreachable" in result.error


async def test_a_server_that_never_greets_times_out_within_the_bound() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with scripted_server(silent) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await check_seen("127.0.0.1", port, "u", "p", "u@x", ["<a@b>"], timeout=0.5)
        assert loop.time() - started < 2
    assert result.failure is SeenCheckFailure.TIMEOUT


async def test_a_server_that_goes_silent_after_login_times_out_within_the_bound() -> None:
    async def silent_after_login(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():
            tag, verb = line.split()[:2]
            if verb.upper() == b"LIST":
                await reader.read()  # no answer, until the client gives up
                return
            caps = b"* CAPABILITY IMAP4rev1\r\n" if verb.upper() == b"CAPABILITY" else b""
            writer.write(caps + tag + b" OK done\r\n")

    async with scripted_server(silent_after_login) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await check_seen("127.0.0.1", port, "u", "p", "u@x", ["<a@b>"], timeout=0.5)
        assert loop.time() - started < 2
    assert result.failure is SeenCheckFailure.TIMEOUT
    assert result.error is not None and "LIST" in result.error


async def test_many_message_ids_are_searched_in_batches(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    account: CreatedAccount = await add_councillor("Tomasz", "Wielki")
    sent = [message_id(f"seria-{n}", account) for n in range(120)]  # 3 batches of UID SEARCH
    never = [message_id(f"nigdy-{n}", account) for n in range(10)]
    await deliver(settings, account, *sent)
    read = sorted(sent)[::25]  # some in each batch of 50 (ids go out in sorted order)
    async with as_councillor(settings, account) as client:
        for mid in read:
            await read_body(client, mid)

    result = await check(settings, account, [*sent, *never])
    assert result.error is None
    assert result.seen == dict.fromkeys(read, "INBOX")
    assert result.unseen == set(sent) - set(read)
    assert result.missing == set(never)


# -- literals (a scripted server: Dovecot sends none for names it accepts) --------------------


class ScriptedImap:
    """A minimal IMAP server that lists folder names as literals, one of them in UTF-8."""

    UTF8_FOLDER = "Październik".encode()  # as a server with UTF8=ACCEPT on would list it
    FOLDER = b'Wrzesie&AUQ- "pilne"'  # modified UTF-7 with quotes: sent back escaped
    HEADER = b"Message-ID:\r\n <lit@x>\r\n\r\n"  # folded, as some senders write it

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] scripted\r\n")
        while line := await reader.readline():
            self.commands.append(line)
            tag, verb = line.split()[:2]
            writer.write(self.answer(verb.upper(), line) + tag + b" OK done\r\n")
            if verb.upper() == b"LOGOUT":
                break

    def answer(self, verb: bytes, line: bytes) -> bytes:
        if verb == b"CAPABILITY":
            return b"* CAPABILITY IMAP4rev1\r\n"
        if verb == b"LIST":
            return (
                b'* LIST (\\Noselect \\HasChildren) "." Archiwum\r\n'
                b'* LIST () "." {%d}\r\n%s\r\n'
                b'* LIST () "." {%d}\r\n%s\r\n'
                b"* LIST () NIL INBOX\r\n"
                % (len(self.UTF8_FOLDER), self.UTF8_FOLDER, len(self.FOLDER), self.FOLDER)
            )
        if verb == b"SELECT":
            return b"* 1 EXISTS\r\n" if b"pilne" in line else b"* 0 EXISTS\r\n"
        if verb == b"UID" and b"SEARCH" in line:
            return b"* SEARCH 7\r\n"
        if verb == b"UID" and b"FETCH" in line:
            return (
                b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (MESSAGE-ID)] {%d}\r\n%s)\r\n"
                % (len(self.HEADER), self.HEADER)
            )
        if verb == b"LOGOUT":
            return b"* BYE bye\r\n"
        return b""


async def test_folder_names_in_literals_are_read_and_sent_back_quoted() -> None:
    script = ScriptedImap()
    async with scripted_server(script.serve) as port:
        result = await check_seen("127.0.0.1", port, "u*master", 'p"\\', "u@x", ["<lit@x>"])
    assert result.error is None
    assert result.seen == {"<lit@x>": 'Wrzesień "pilne"'}
    verbs = [c.split()[1].upper() for c in script.commands]
    assert verbs == [b"CAPABILITY", b"LOGIN", b"LIST", *[b"SELECT"] * 3, b"UID", b"UID", b"LOGOUT"]
    assert script.commands[1].endswith(b'LOGIN "u*master" "p\\"\\\\"\r\n')
    # INBOX first (empty: skipped), then the folders in the order listed; aioimaplib sends no
    # literals (but APPEND's), so the UTF-8 name goes back as UTF-8 in a quoted string.
    assert [c.split(b" ", 2)[2] for c in script.commands[3:6]] == [
        b'"INBOX"\r\n',
        b'"' + ScriptedImap.UTF8_FOLDER + b'"\r\n',
        b'"Wrzesie&AUQ- \\"pilne\\""\r\n',
    ]
    assert all(b"BODY[]" not in c and b"RFC822" not in c for c in script.commands)


# -- several mailboxes -----------------------------------------------------------------------


async def test_check_many_reports_each_mailbox_in_order(
    settings: Settings, add_councillor: Callable[[str, str], Any]
) -> None:
    accounts: list[CreatedAccount] = [
        await add_councillor("Zofia", "Żak"),
        await add_councillor("Piotr", "Łęcki"),
        await add_councillor("Maria", "Ślązak"),
    ]
    targets: dict[str, list[str]] = {}
    for account in accounts:
        ids = [message_id("a", account), message_id("b", account)]
        await deliver(settings, account, *ids)
        targets[account.address] = ids
    # The second councillor read "a", the third read both.
    async with as_councillor(settings, accounts[1]) as client:
        await read_body(client, targets[accounts[1].address][0])
    async with as_councillor(settings, accounts[2]) as client:
        for mid in targets[accounts[2].address]:
            await read_body(client, mid)
    unknown = f"nikt@{settings.domain}"
    targets[unknown] = ["<a@b>"]

    results = await check_many(
        targets,
        lambda mailbox: master_credentials(settings, mailbox),
        settings.stack.host,
        settings.stack.imap_port,
        concurrency=2,
    )

    assert [r.mailbox for r in results] == list(targets)
    zofia, piotr, maria, nobody = results
    assert zofia.seen == {} and zofia.unseen == set(targets[accounts[0].address])
    a, b = targets[accounts[1].address]
    assert piotr.seen == {a: "INBOX"} and piotr.unseen == {b}
    assert maria.seen == dict.fromkeys(targets[accounts[2].address], "INBOX")
    assert nobody.error is not None and nobody.failure is SeenCheckFailure.LOGIN_UNAVAILABLE


async def test_check_many_keeps_to_its_concurrency_and_survives_a_bad_credentials_lookup() -> None:
    active = peak = 0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.2)  # long enough for any extra connection to show up
            writer.write(b"* OK ready\r\n")
            tag = (await reader.readline()).split()[0]  # aioimaplib asks for CAPABILITY first
            writer.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
            tag = (await reader.readline()).split()[0]
            writer.write(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
            await writer.drain()
        finally:
            # Counted until the answer is sent: the client holds its slot at least that long,
            # so a higher count can only mean more connections than allowed.
            active -= 1
        await reader.read()

    def credentials(mailbox: str) -> tuple[str, str]:
        if mailbox.startswith("zepsuty"):
            raise KeyError(mailbox)
        return f"{mailbox}*master", "secret"

    targets = {f"radny{n}@x": ["<a@b>"] for n in range(5)} | {"zepsuty@x": ["<a@b>"]}
    async with scripted_server(refuse) as port:
        results = await check_many(targets, credentials, "127.0.0.1", port, concurrency=2)
    assert peak == 2
    assert [r.failure for r in results] == [SeenCheckFailure.LOGIN_REFUSED] * 5 + [
        SeenCheckFailure.NO_CREDENTIALS
    ]
