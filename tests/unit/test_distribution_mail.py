"""Distribution messages: a personal head plus attachment parts stored once, assembled into a
well-formed MIME message that no clerk-typed value can break."""

from __future__ import annotations

import email
import hashlib
import os
from datetime import datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailsvc.config import Settings, load_settings
from mailsvc.distribution.mail import (
    Pack,
    PackDocument,
    SessionFacts,
    attachment_headers,
    prepare_pack,
    render_head,
)
from mailsvc.relay.delivery.body import PartedBody, encode_part, parts_dir
from mailsvc.relay.delivery.lmtp import encode_data, stuff


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}).with_changes(var_dir=tmp_path)


def document(
    tmp_path: Path, name: str, content: bytes, doc_id: int, item: int | None
) -> PackDocument:
    path = tmp_path / f"doc{doc_id}"
    path.write_bytes(content)
    return PackDocument(
        doc_id,
        path,
        name,
        "application/pdf",
        len(content),
        2,
        hashlib.sha256(content).hexdigest(),
        item,
    )


HOSTILE = "Sala\r\nBcc: intruder@example.org\r\n\r\nX"


def facts(place: str = "Sala Obrad, ul. Rynek 1") -> SessionFacts:
    return SessionFacts(
        "XV/2026\r\nX-Injected: yes",
        "ordinary",
        datetime(2026, 12, 17, 10, 0),
        place,
        ((1, "Otwarcie sesji"), (2, "Projekt uchwały\r\nContent-Type: text/evil")),
    )


def make_pack(settings: Settings, tmp_path: Path, *, big: bool = False) -> Pack:
    rng = os.urandom(3 * 1024 * 1024 if big else 50_000)
    docs = [
        document(tmp_path, "projekt-uchwały-żłobki.pdf", b"%PDF-1.4\n" + rng, 1, 2),
        document(tmp_path, "a\r\nX-Evil: 1.pdf", b"%PDF-1.4\nsecond\n.\n..line\n", 2, None),
    ]
    return prepare_pack(
        settings,
        distribution_id=7,
        kind="notice",
        session=facts(HOSTILE),
        note="Zmieniono porządek obrad.\r\nBcc: x@example.org",
        documents=docs,
    )


def head_for(settings: Settings, pack: Pack, to: tuple[str, str]) -> bytes:
    return render_head(
        settings,
        pack,
        to=to,
        message_id="<abc.d7@rada.miasto.example>",
        return_path="bounces+1abc@rada.miasto.example",
        ack_url="http://127.0.0.1:8025/a/TOKEN",
        download_urls={},
        links_valid_until="2027-01-16",
        references=["<orig.d6@rada.miasto.example>"],
    )


async def assemble(settings: Settings, pack: Pack, head: bytes) -> EmailMessage:
    body = PartedBody.from_stored(
        head, PartedBody.to_stored(pack.boundary, list(pack.part_names)), settings.var_dir
    )
    raw = await body.to_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_attachments_are_encoded_once_and_shared(settings: Settings, tmp_path: Path) -> None:
    pack = make_pack(settings, tmp_path)
    assert len(pack.part_names) == 2
    again = make_pack(settings, tmp_path)  # same documents, same headers: same part files
    assert set(os.listdir(parts_dir(settings.var_dir))) >= set(again.part_names)


async def test_message_parses_with_the_documents_intact(settings: Settings, tmp_path: Path) -> None:
    pack = make_pack(settings, tmp_path)
    head = head_for(settings, pack, ("Łukasz Żółć", "lukasz.zolc@rada.miasto.example"))
    msg = await assemble(settings, pack, head)
    assert msg.get_content_type() == "multipart/mixed"
    assert str(msg["To"]) == "Łukasz Żółć <lukasz.zolc@rada.miasto.example>"
    assert msg["In-Reply-To"] == "<orig.d6@rada.miasto.example>"
    assert msg["Disposition-Notification-To"] == "bounces+1abc@rada.miasto.example"
    attachments = list(msg.iter_attachments())
    assert attachments[0].get_filename() == "projekt-uchwały-żłobki.pdf"
    for part, doc in zip(attachments, pack.documents, strict=True):
        payload = part.get_content()
        assert isinstance(payload, bytes)
        assert hashlib.sha256(payload).hexdigest() == doc.sha256
    text = msg.get_body(("plain",))
    assert text is not None and "http://127.0.0.1:8025/a/TOKEN" in text.get_content()
    html = msg.get_body(("html",))
    assert html is not None and "Potwierdzam otrzymanie" in html.get_content()


async def test_clerk_values_cannot_add_headers_or_parts(settings: Settings, tmp_path: Path) -> None:
    pack = make_pack(settings, tmp_path)
    msg = await assemble(
        settings, pack, head_for(settings, pack, ("Jan", "jan@rada.miasto.example"))
    )
    assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["X-Evil"] is None
    # Two attachments and the text/html pair: nothing more, nothing less.
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
        "application/pdf",
    ]
    html = msg.get_body(("html",))
    assert html is not None
    assert "<script" not in html.get_content()


async def test_head_stays_small_whatever_the_pack(settings: Settings, tmp_path: Path) -> None:
    pack = make_pack(settings, tmp_path, big=True)
    head = head_for(settings, pack, ("Jan", "jan@rada.miasto.example"))
    assert len(head) < 20_000  # the 3 MB document lives once on disk, not in each head
    body = PartedBody.from_stored(
        head, PartedBody.to_stored(pack.boundary, list(pack.part_names)), settings.var_dir
    )
    chunks = [c async for c in body.tail_chunks()]
    assert max(len(c) for c in chunks) <= 1024 * 1024


async def test_streamed_lmtp_data_equals_stuffing_the_whole_message(
    settings: Settings, tmp_path: Path
) -> None:
    # The LMTP client stuffs only the head and streams the parts as they are: that must be
    # byte for byte what stuffing the assembled message gives.
    pack = make_pack(settings, tmp_path)
    head = head_for(settings, pack, ("Jan", "jan@rada.miasto.example"))
    body = PartedBody.from_stored(
        head, PartedBody.to_stored(pack.boundary, list(pack.part_names)), settings.var_dir
    )
    streamed = stuff(head) + b"".join([c async for c in body.tail_chunks()]) + b".\r\n"
    assert streamed == encode_data(await body.to_bytes())


@pytest.mark.parametrize(
    "filename",
    [
        ".ukryty.pdf",
        "." + "ż" * 120 + ".pdf",  # folded, RFC 2231-encoded over several lines
        "uchwała " + "x" * 90 + " .pdf",  # folded at the space before the dot
        "a\r\n.\r\nRCPT TO:<x@example.org>.pdf",
    ],
)
def test_part_files_keep_what_the_lmtp_client_relies_on(
    settings: Settings, tmp_path: Path, filename: str
) -> None:
    # The LMTP client sends part files without CRLF conversion and without dot-stuffing:
    # every line must end with CRLF and none may start with a dot, whatever the file's name.
    source = tmp_path / "doc"
    source.write_bytes(os.urandom(10_000) + b"\r\n.\r\n")
    headers = attachment_headers(filename, "application/pdf")
    part = (
        parts_dir(settings.var_dir) / encode_part(source, headers, settings.var_dir)
    ).read_bytes()
    assert part.endswith(b"\r\n") and part.count(b"\n") == part.count(b"\r\n")
    assert not part.startswith(b".") and b"\n." not in part
    assert len(headers.split(b"\r\n")) > 3 or len(filename) < 20  # long names did fold


@pytest.mark.parametrize(
    "headers",
    [b"Content-Type: text/plain\r\n.hidden: x\r\n", b".x: y\r\n", b"A: b\nC: d\r\n", b"A: b"],
)
def test_part_headers_that_would_need_stuffing_are_refused(
    settings: Settings, tmp_path: Path, headers: bytes
) -> None:
    source = tmp_path / "doc"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        encode_part(source, headers, settings.var_dir)


def test_missing_part_file_is_reported(settings: Settings, tmp_path: Path) -> None:
    pack = make_pack(settings, tmp_path)
    body = PartedBody.from_stored(
        b"x", PartedBody.to_stored(pack.boundary, list(pack.part_names)), settings.var_dir
    )
    (parts_dir(settings.var_dir) / pack.part_names[0]).unlink()
    with pytest.raises(FileNotFoundError):
        body.check()
    with pytest.raises(ValueError):
        PartedBody.from_stored(b"x", '{"boundary": "b", "files": ["../etc"]}', settings.var_dir)


def test_links_instead_of_attachments_above_the_limit(settings: Settings, tmp_path: Path) -> None:
    small = settings.with_changes(distribution={"attach_max_bytes": 1000})
    pack = make_pack(small, tmp_path)
    assert pack.linked and pack.part_names == ()
    head = render_head(
        small,
        pack,
        to=("Jan", "jan@rada.miasto.example"),
        message_id="<x.d7@rada.miasto.example>",
        return_path="bounces+1abc@rada.miasto.example",
        ack_url="http://h/a/T",
        download_urls={1: "http://h/d/ONE", 2: "http://h/d/TWO"},
        links_valid_until="2027-01-16",
    )
    msg = email.message_from_bytes(head, policy=policy.default)
    assert not list(msg.iter_attachments())  # type: ignore[attr-defined]
    plain = msg.get_body(("plain",))  # type: ignore[attr-defined]
    assert "http://h/d/ONE" in plain.get_content() and "http://h/d/TWO" in plain.get_content()


async def test_english_messages_when_configured(settings: Settings, tmp_path: Path) -> None:
    english = settings.with_changes(language="en")
    pack = make_pack(english, tmp_path)
    msg = await assemble(english, pack, head_for(english, pack, ("Jan", "jan@rada.miasto.example")))
    assert str(msg["Subject"]).startswith("Notice of session XV/2026")
    assert msg["Content-Language"] == "en"
    plain = msg.get_body(("plain",))
    assert (
        plain is not None and "Please confirm that you received this message" in plain.get_content()
    )
