"""Read-only access to a mailbox over IMAP (aioimaplib): BODY.PEEK never sets \\Seen."""

from __future__ import annotations

import aioimaplib

from mailsvc.errors import MailsvcError, TemporaryFailure


class MailboxLoginFailed(MailsvcError):
    """The IMAP server refused the credentials."""


async def read_inbox(
    host: str, port: int, user: str, password: str, *, headers_only: bool = False
) -> list[bytes]:
    """Every message in INBOX (or only its header), oldest first, without marking it read."""
    client = aioimaplib.IMAP4(host=host, port=port, timeout=10)
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError) as exc:
        raise TemporaryFailure(f"IMAP {host}:{port} unreachable: {exc}") from exc
    try:
        res = await client.login(user, password)
        if res.result != "OK":
            raise MailboxLoginFailed(f"IMAP login as {user} refused: {res.lines[-1]!r}")
        # aioimaplib does not enter the SELECTED state after EXAMINE, so SELECT is used;
        # BODY.PEEK below is what keeps \\Seen untouched.
        res = await client.select("INBOX")
        if res.result != "OK":
            raise MailsvcError(f"IMAP SELECT INBOX failed for {user}: {res.lines[-1]!r}")
        part = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        res = await client.fetch("1:*", f"({part})") if _has_messages(res.lines) else None
        if res is None:
            return []
        return [bytes(line) for line in res.lines if isinstance(line, bytearray)]
    finally:
        try:
            await client.logout()
        except (OSError, TimeoutError, aioimaplib.Abort):
            pass


def _has_messages(examine_lines: list[bytes]) -> bool:
    for line in examine_lines:
        text = bytes(line).decode("ascii", "replace")
        if text.endswith(" EXISTS"):
            return int(text.split()[0]) > 0
    return False
