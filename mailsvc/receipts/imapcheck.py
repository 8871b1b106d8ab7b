"""The IMAP "opened" check: which distribution messages has a councillor read?

A scheduled job logs in to each councillor's mailbox as Dovecot's master user and looks for each
distribution message (found by its Message-ID, in whatever folder the councillor moved it to) and
its ``\\Seen`` flag, without ever setting that flag itself: through :mod:`mailsvc.mailbox`
(aioimaplib), which opens folders with SELECT and only searches, or fetches FLAGS and
``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]``.

Public API: :func:`check_seen`, :func:`check_many`, :class:`SeenResult`, :class:`SeenCheckFailure`,
and the modified UTF-7 codec for folder names (:func:`encode_mailbox_name`,
:func:`decode_mailbox_name`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import ssl
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import aioimaplib

from mailsvc.mailbox import MailboxError, MailboxSession, open_mailbox

log = logging.getLogger(__name__)

# Message-IDs asked for in one UID SEARCH (an OR chain); keeps command lines far below Dovecot's
# 64 KiB imap_max_line_length.
_SEARCH_BATCH = 50
_FETCH_ITEMS = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)", re.IGNORECASE)
_SEEN = b"\\SEEN"


class SeenCheckFailure(StrEnum):
    """Why a mailbox could not be checked; stable values for logs and stored evidence.

    The same values as :class:`mailsvc.mailbox.MailboxFailure`, plus NO_CREDENTIALS.
    """

    UNREACHABLE = "unreachable"  # no TCP/TLS connection or no IMAP greeting
    TIMEOUT = "timeout"  # the server stopped answering within the timeout
    LOGIN_REFUSED = "login-refused"  # wrong master secret or login name (fix the configuration)
    # Dovecot's NO [UNAVAILABLE]: a temporary failure (LDAP down) — and also its answer to a
    # master login for a mailbox that does not exist or is disabled.
    LOGIN_UNAVAILABLE = "login-unavailable"
    SERVER_ERROR = "server-error"  # connection broken or answers we cannot use after login
    TLS_FAILED = "tls-failed"  # certificate not trusted or not for the host, STARTTLS refused
    PLAINTEXT_REFUSED = "plaintext-refused"  # no TLS asked for, to a host that is not loopback
    NO_CREDENTIALS = "no-credentials"  # check_many: the credentials callable failed


@dataclass(frozen=True)
class SeenResult:
    """What one mailbox says about the message-ids asked for.

    Every valid id asked for is in exactly one of ``seen``, ``unseen`` and ``missing`` — unless
    ``error`` is set, when all three are empty because nothing is known. Ids that could not be
    sent to the server safely (CR, LF, quotes, non-ASCII, no angle brackets) are in ``rejected``.
    """

    mailbox: str  # the councillor's address
    seen: dict[str, str]  # message-id (with <>) -> folder where found with \Seen
    unseen: frozenset[str]  # found, but in no folder with \Seen
    missing: frozenset[str]  # not found in any folder (deleted or never delivered)
    error: str | None = None  # what went wrong, for people; ``failure`` says it for code
    failure: SeenCheckFailure | None = None
    rejected: frozenset[str] = field(default_factory=frozenset)


async def check_seen(
    host: str,
    port: int,
    login: str,
    password: str,
    mailbox: str,
    message_ids: Collection[str],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per step (connect, each answer), not overall
    ssl_context: ssl.SSLContext | None = None,
    starttls: bool = False,
) -> SeenResult:
    """Look for each message-id in every selectable folder of one mailbox, INBOX first.

    ``login``/``password`` are usually Dovecot master credentials (``<mailbox>*master``). Never
    raises for the mailbox's own trouble: an unreachable server, a refused login or a broken
    conversation is reported in ``error``/``failure``. ``timeout`` bounds the connection and each
    command's whole answer. ``ssl_context`` and ``starttls`` as for
    :func:`mailsvc.mailbox.open_mailbox` (without TLS only a loopback host is reached). A copy
    found with ``\\Seen`` in any folder wins over an unseen copy elsewhere, so the search stops
    early only once every id has been found seen.
    """
    wanted, rejected = _split_valid_ids(message_ids)
    if not wanted:
        return SeenResult(mailbox, {}, frozenset(), frozenset(), rejected=rejected)
    try:
        async with open_mailbox(
            host, port, login, password, timeout=timeout, ssl_context=ssl_context, starttls=starttls
        ) as session:
            seen, unseen = await _search_mailbox(session, wanted)
    except MailboxError as exc:
        return _failed(mailbox, SeenCheckFailure(exc.failure.value), str(exc), rejected)
    return SeenResult(
        mailbox,
        seen,
        frozenset(unseen - seen.keys()),
        frozenset(wanted - seen.keys() - unseen),
        rejected=rejected,
    )


async def check_many(
    targets: Mapping[str, Collection[str]],
    credentials: Callable[[str], tuple[str, str]],
    host: str,
    port: int,
    *,
    concurrency: int = 4,
    timeout: float = 10.0,  # noqa: ASYNC109 - passed on to check_seen
    ssl_context: ssl.SSLContext | None = None,
    starttls: bool = False,
) -> list[SeenResult]:
    """Check several mailboxes, at most ``concurrency`` connections at a time.

    ``targets`` maps a councillor's address to the message-ids sent to them; ``credentials``
    gives the IMAP login and password for an address (e.g. ``mailsvc.stack.master_credentials``
    bound to the settings). Results come back in the order of ``targets``; one mailbox's trouble
    is reported in its own result and never stops the others.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(mailbox: str, ids: Collection[str]) -> SeenResult:
        try:
            login, password = credentials(mailbox)
        except Exception as exc:  # any lookup failure belongs to this mailbox only
            message = f"no IMAP credentials for {mailbox}: {exc!r}"
            return _failed(mailbox, SeenCheckFailure.NO_CREDENTIALS, message, frozenset())
        async with gate:
            return await check_seen(
                host,
                port,
                login,
                password,
                mailbox,
                ids,
                timeout=timeout,
                ssl_context=ssl_context,
                starttls=starttls,
            )

    return list(await asyncio.gather(*(one(m, ids) for m, ids in targets.items())))


def _failed(
    mailbox: str, failure: SeenCheckFailure, message: str, rejected: frozenset[str]
) -> SeenResult:
    log.info("IMAP seen check of %s failed: %s", mailbox, message)
    empty: frozenset[str] = frozenset()
    return SeenResult(mailbox, {}, empty, empty, error=message, failure=failure, rejected=rejected)


# -- searching one mailbox -----------------------------------------------------------------


async def _search_mailbox(
    session: MailboxSession, wanted: frozenset[str]
) -> tuple[dict[str, str], set[str]]:
    """Walk the folders, INBOX first; returns (id -> folder where seen, ids found unseen)."""
    seen: dict[str, str] = {}
    unseen: set[str] = set()
    for raw_name in await session.folders():
        pending = sorted(wanted - seen.keys())
        if not pending:
            break
        if not await session.select(raw_name):  # gone since LIST, or empty
            continue
        folder = _folder_display_name(raw_name)
        for batch in _batches(pending, _SEARCH_BATCH):
            uids = await session.uid_search(_search_criteria(batch))
            if not uids:
                continue
            uid_set = ",".join(str(u) for u in sorted(set(uids)))
            for meta, literals in await session.fetch(uid_set, _FETCH_ITEMS, by_uid=True):
                flags = _FLAGS.search(meta)
                if flags is None or not literals:  # an unsolicited flag update: not ours
                    continue
                for message_id in _header_message_ids(literals[0]) & wanted:
                    if _SEEN in flags[1].upper().split():
                        seen.setdefault(message_id, folder)
                    else:
                        unseen.add(message_id)
    return seen, unseen


def _search_criteria(message_ids: Sequence[str]) -> str:
    keys = [f"HEADER Message-ID {aioimaplib.quoted(m)}" for m in message_ids]
    return "OR " * (len(keys) - 1) + " ".join(keys)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- folder names: modified UTF-7 (RFC 3501 section 5.1.3) -----------------------------------

_MUTF7_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]+")


def encode_mailbox_name(name: str) -> bytes:
    """``"Sesje Rady.Wrzesień"`` -> ``b"Sesje Rady.Wrzesie&AUQ-"``: what IMAP commands carry."""

    def shift(run: re.Match[str]) -> str:
        packed = base64.b64encode(run.group().encode("utf-16-be")).rstrip(b"=")
        return "&" + packed.replace(b"/", b",").decode("ascii") + "-"

    return _NOT_PRINTABLE_ASCII.sub(shift, name.replace("&", "&-")).encode("ascii")


def decode_mailbox_name(raw: bytes) -> str:
    """The folder name for people; raises ValueError for bytes that are not modified UTF-7."""
    parts = _MUTF7_SHIFTED.split(raw)
    text: list[str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:  # plain text between shifted runs
            if b"&" in part or not all(0x20 <= b <= 0x7E for b in part):
                raise ValueError(f"not modified UTF-7: {raw!r}")
            text.append(part.decode("ascii"))
        elif not part:
            text.append("&")
        else:
            packed = part.replace(b",", b"/")
            try:
                utf16 = base64.b64decode(packed + b"=" * (-len(packed) % 4), validate=True)
                text.append(utf16.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"not modified UTF-7: {raw!r}") from exc
    return "".join(text)


def _folder_display_name(raw: bytes) -> str:
    if not raw.isascii():  # a server with UTF8=ACCEPT on sends UTF-8 names as they are
        return raw.decode("utf-8", "replace")
    try:
        return decode_mailbox_name(raw)
    except ValueError:
        return raw.decode("ascii")


# -- message-ids ---------------------------------------------------------------------------

# What may travel inside an IMAP quoted string without doubt: printable ASCII except the quote
# (a backslash is escaped). CR/LF would end the command line and let the rest run as a command.
_SAFE_ID = re.compile(r"<[\x20-\x21\x23-\x7e]+>")


def _split_valid_ids(message_ids: Collection[str]) -> tuple[frozenset[str], frozenset[str]]:
    valid = {m for m in message_ids if _SAFE_ID.fullmatch(m)}
    return frozenset(valid), frozenset(set(message_ids) - valid)


def _header_message_ids(header: bytes) -> set[str]:
    """The Message-ID values in a fetched ``HEADER.FIELDS (MESSAGE-ID)`` block, unfolded."""
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", header)
    ids: set[str] = set()
    for line in re.split(rb"\r?\n", unfolded):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"message-id":
            text = value.decode("utf-8", "replace").strip()
            bracketed = re.search(r"<[^<>]*>", text)
            ids.add(bracketed.group() if bracketed else text)
    return ids
