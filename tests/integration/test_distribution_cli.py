"""The clerks' session and distribution commands as a clerk runs them: ``mailsvc sessions``,
``distribute``, ``distributions``, ``receipts``, ``print-list`` and ``savings`` go through
``mailsvc.cli.main.main`` in this process (configured by MAILSVC_* variables pointing at the test's
settings) against the real slapd and Dovecot; each test checks what is printed and what is
stored."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pytest
from fpdf import FPDF

from mailsvc.app import Parts
from mailsvc.cli.main import main
from mailsvc.config import Settings
from mailsvc.mailbox import read_inbox
from mailsvc.storage.sessions import DistributionRow, DocumentRow
from provisioning.directory import Directory

PLACE = "Sala Obrad im. Józefa Piłsudskiego, ul. Rynek 1"
AGENDA = (
    "Otwarcie sesji",
    "Projekt uchwały w sprawie żłobków",
    "Zażółć gęślą jaźń — wolne wnioski",
)
# A tiny valid PNG (1x1, grey): content that a ".pdf" name must not smuggle in.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)


# -- running the command -----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One command's exit status and what it printed."""

    status: int
    out: str
    err: str


Cli = Callable[..., Any]


def cli_env(settings: Settings) -> dict[str, str]:
    """What points `mailsvc` at the test's stack, mailboxes and database (as in test_cli.py)."""
    return {
        "MAILSVC_VAR_DIR": str(settings.var_dir),
        "MAILSVC_STACK__HOST": settings.stack.host,
        "MAILSVC_STACK__LDAP_PORT": str(settings.stack.ldap_port),
        "MAILSVC_STACK__DIRECTORY": settings.stack.directory,
        "MAILSVC_STACK__SAMBA_HOST": settings.stack.samba_host,
        "MAILSVC_STACK__IMAP_PORT": str(settings.stack.imap_port),
        "MAILSVC_STACK__LMTP_PORT": str(settings.stack.lmtp_port),
        "MAILSVC_DATABASE__URL": settings.database_url,
    }


def _isolate(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Drop the developer's MAILSVC_* variables, then set ``env``."""
    for name in list(os.environ):
        if name.startswith("MAILSVC_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    async def run(*args: str, env: Mapping[str, str] | None = None) -> Run:
        """``mailsvc ARGS`` in a thread (the command runs its own event loop); ``env`` adds
        variables for this call only."""
        capsys.readouterr()
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            try:
                status = await asyncio.to_thread(main, list(args))
            except SystemExit as exc:  # argparse refusing the arguments
                status = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(status, captured.out, captured.err)

    return run


@pytest.fixture
def cli(
    settings: Settings,
    directory: Directory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """``await cli("sessions", "list")`` runs the command against this test's stack."""
    _isolate(monkeypatch, cli_env(settings))
    return _runner(monkeypatch, capsys)


@pytest.fixture
def bare_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """The command with the embedded default configuration, for what needs no stack."""
    _isolate(monkeypatch, {})
    yield _runner(monkeypatch, capsys)


# -- helpers -----------------------------------------------------------------------------------


def local_now() -> datetime:
    """Now in the council's time zone (what clerks type), naive."""
    return datetime.now(ZoneInfo("Europe/Warsaw")).replace(tzinfo=None)


def at_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def session_day(days_ahead: int) -> datetime:
    return (local_now() + timedelta(days=days_ahead)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )


def make_pdf(path: Path, pages: int, text: str) -> Path:
    pdf = FPDF()
    for i in range(pages):
        pdf.add_page()
        pdf.set_font("helvetica", size=14)
        pdf.cell(text=f"{text} - page {i + 1}")
    pdf.output(str(path))
    return path


def make_docx(path: Path, pages: int) -> Path:
    """The parts of a Word document that identify it and give its page count."""
    main_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/word/document.xml" ContentType="{main_type}"/></Types>',
        )
        archive.writestr(
            "docProps/app.xml",
            f"<Properties><Pages>{pages}</Pages><Application>Test</Application></Properties>",
        )
        archive.writestr("word/document.xml", "<w:document>Opinia komisji</w:document>")
    return path


def make_odt(path: Path, pages: int) -> Path:
    """An ODF text package: the stored ``mimetype`` first, then meta.xml with the page count."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr(
            "meta.xml",
            f'<office:document-meta><meta:document-statistic meta:page-count="{pages}"/>'
            "</office:document-meta>",
        )
        archive.writestr(
            "content.xml", "<office:document-content>Uzasadnienie</office:document-content>"
        )
    return path


async def create_session(cli: Cli, number: str, days_ahead: int) -> datetime:
    starts = session_day(days_ahead)
    args = ["sessions", "create", number, "--at", at_text(starts), "--place", PLACE]
    for item in AGENDA:
        args += ["--agenda", item]
    run = await cli(*args)
    assert run.status == 0, run.err
    return starts


async def documents(parts: Parts, number: str) -> list[DocumentRow]:
    store = parts.distributions().store
    session = await store.session(number)
    assert session is not None
    return await store.documents(session.id)


async def distributions(parts: Parts, number: str) -> list[DistributionRow]:
    store = parts.distributions().store
    session = await store.session(number)
    assert session is not None
    return await store.distributions(session_id=session.id)


def scheduled_id(run: Run) -> int:
    found = re.search(r"#(\d+)", run.out)
    assert found, run.out
    return int(found.group(1))


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def squeezed(text: str) -> str:
    """Text without white space: a long hash may be wrapped across lines in a PDF cell."""
    return re.sub(r"\s+", "", text)


# -- sessions ----------------------------------------------------------------------------------


async def test_sessions_create_list_show_and_refuse_duplicates_and_impossible_dates(
    cli: Cli, parts: Parts
) -> None:
    starts = await create_session(cli, "XV/2026", 14)
    store = parts.distributions().store
    stored = await store.session("XV/2026")
    assert stored is not None
    assert (stored.place, stored.starts_at, stored.status) == (PLACE, starts, "planned")
    assert tuple(i.title for i in await store.agenda(stored.id)) == AGENDA

    table = await cli("sessions", "list")
    assert table.status == 0, table.err
    (line,) = [ln for ln in table.out.splitlines() if ln.startswith("XV/2026")]
    assert at_text(starts) in line and PLACE in line and "planned" in line

    listed = await cli("sessions", "list", "--json")
    assert listed.status == 0, listed.err
    assert json.loads(listed.out) == [
        {
            "number": "XV/2026",
            "kind": "ordinary",
            "starts_at": starts.isoformat(),
            "place": PLACE,
            "status": "planned",
        }
    ]

    shown = await cli("sessions", "show", "XV/2026")
    assert shown.status == 0, shown.err
    lines = shown.out.splitlines()
    assert PLACE in lines[0] and at_text(starts) in lines[0]
    agenda_at = lines.index("Porządek obrad:")
    assert lines[agenda_at + 1 : agenda_at + 4] == [f"  {n}. {t}" for n, t in enumerate(AGENDA, 1)]

    # A second session with the same number is refused, and the first one is left as it was.
    again = await cli(
        "sessions", "create", "XV/2026", "--at", "2027-01-14 10:00", "--place", "Gdzie indziej"
    )
    assert again.status == 1
    assert "XV/2026" in again.err and ("istnieje" in again.err or "exists" in again.err)
    assert [s.number for s in await store.list_sessions()] == ["XV/2026"]
    still = await store.session("XV/2026")
    assert still is not None and (still.place, still.starts_at) == (PLACE, starts)

    # 30 February does not exist; nothing is stored.
    impossible = await cli(
        "sessions", "create", "XVI/2026", "--at", "2027-02-30 10:00", "--place", PLACE
    )
    assert impossible.status == 1
    assert "2027-02-30 10:00" in impossible.err and "nie ma takiej daty" in impossible.err
    assert impossible.out == ""
    # 02:30 on 28 March 2027 does not exist in Warsaw: the clocks go from 02:00 to 03:00.
    skipped = await cli(
        "sessions", "create", "XVI/2026", "--at", "2027-03-28 02:30", "--place", PLACE
    )
    assert skipped.status == 1
    assert "2027-03-28 02:30" in skipped.err and "Europe/Warsaw" in skipped.err
    garbled = await cli("sessions", "create", "XVI/2026", "--at", "jutro o 10", "--place", PLACE)
    assert garbled.status == 1 and "2026-12-17 10:00" in garbled.err  # shows the expected form
    assert await store.session("XVI/2026") is None
    assert len(await store.list_sessions()) == 1


# -- documents ---------------------------------------------------------------------------------


async def test_attach_checks_content_counts_pages_and_respects_agenda_items(
    cli: Cli, parts: Parts, tmp_path: Path
) -> None:
    await create_session(cli, "XV/2026", 14)
    pdf = make_pdf(tmp_path / "projekt-uchwały-żłobki.pdf", 3, "Projekt uchwaly")
    attached = await cli(
        "sessions", "attach", "XV/2026", str(pdf), "--kind", "draft-resolution", "--item", "2"
    )
    assert attached.status == 0, attached.err
    assert "projekt-uchwały-żłobki.pdf" in attached.out and "3 s." in attached.out
    sha = hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert f"sha256={sha}" in attached.out
    (doc,) = await documents(parts, "XV/2026")
    items = await parts.distributions().store.agenda(doc.session_id)
    assert (doc.sha256, doc.pages, doc.doc_kind, doc.media_type) == (
        sha,
        3,
        "draft-resolution",
        "application/pdf",
    )
    assert doc.agenda_item_id == items[1].id  # item 2

    # Office files made here: the content decides the type and gives the page count.
    docx = make_docx(tmp_path / "opinia-komisji.docx", 4)
    odt = make_odt(tmp_path / "uzasadnienie.odt", 2)
    both = await cli("sessions", "attach", "XV/2026", str(docx), str(odt))
    assert both.status == 0, both.err
    out = both.out.splitlines()
    assert out[0].startswith("[1/2]") and "opinia-komisji.docx" in out[0] and "4 s." in out[0]
    assert out[1].startswith("[2/2]") and "uzasadnienie.odt" in out[1] and "2 s." in out[1]
    by_name = {d.filename: d for d in await documents(parts, "XV/2026")}
    assert by_name["opinia-komisji.docx"].media_type.endswith("wordprocessingml.document")
    assert by_name["uzasadnienie.odt"].media_type == "application/vnd.oasis.opendocument.text"
    assert (by_name["opinia-komisji.docx"].pages, by_name["uzasadnienie.odt"].pages) == (4, 2)
    assert by_name["uzasadnienie.odt"].agenda_item_id is None

    # A picture and a text file under a PDF's name are refused, naming the file; nothing is
    # stored, not even a good file given in the same command.
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    png = fake_dir / "uchwała.pdf"
    png.write_bytes(PNG_1X1)
    good = make_pdf(tmp_path / "autopoprawka.pdf", 1, "Autopoprawka")
    refused = await cli("sessions", "attach", "XV/2026", str(good), str(png))
    assert refused.status == 1
    assert "uchwała.pdf" in refused.err and "PNG" in refused.err
    text = tmp_path / "uchwała.pdf"
    text.write_text("Projekt uchwały — wersja robocza\n", encoding="utf-8")
    refused_text = await cli("sessions", "attach", "XV/2026", str(text))
    assert refused_text.status == 1
    assert "uchwała.pdf" in refused_text.err and "tekst" in refused_text.err
    assert len(await documents(parts, "XV/2026")) == 3

    # Agenda item 9 does not exist: refused, naming the items there are.
    wrong_item = await cli("sessions", "attach", "XV/2026", str(good), "--item", "9")
    assert wrong_item.status == 1
    assert "9" in wrong_item.err and "1, 2, 3" in wrong_item.err
    assert len(await documents(parts, "XV/2026")) == 3

    # `show` lists each document under its agenda item, or with the whole session.
    shown = (await cli("sessions", "show", "XV/2026")).out.splitlines()
    item2 = shown.index(f"  2. {AGENDA[1]}")
    assert "projekt-uchwały-żłobki.pdf" in shown[item2 + 1] and sha in shown[item2 + 1]
    assert shown[item2 + 2] == f"  3. {AGENDA[2]}"
    whole = shown.index("Materiały do całej sesji:")
    assert {"opinia-komisji.docx", "uzasadnienie.odt"} == {
        name for ln in shown[whole + 1 : whole + 3] for name in re.findall(r"\] (\S+) \(", ln)
    }


# -- distribute --------------------------------------------------------------------------------


async def test_distribute_refuses_a_late_notice_unless_overridden_and_cancels_a_scheduled_one(
    cli: Cli, parts: Parts, tmp_path: Path
) -> None:
    starts = await create_session(cli, "XVI/2026", 3)
    pdf = make_pdf(tmp_path / "porządek-obrad.pdf", 1, "Porzadek obrad")
    assert (await cli("sessions", "attach", "XVI/2026", str(pdf), "--kind", "agenda")).status == 0

    late = await cli("distribute", "XVI/2026")
    assert late.status == 1
    assert "7 dni" in late.err  # the rule
    assert starts.date().isoformat() in late.err  # the session's date
    assert (starts.date() - timedelta(days=7)).isoformat() in late.err  # the deadline
    assert local_now().date().isoformat() in late.err  # when it would arrive
    assert "--override-notice" in late.err  # and how to send it anyway
    english = await cli("distribute", "XVI/2026", env={"MAILSVC_LANGUAGE": "en"})
    assert english.status == 1
    assert "7 days" in english.err and "To send it anyway" in english.err
    assert await distributions(parts, "XVI/2026") == []

    due = local_now().replace(second=0, microsecond=0) + timedelta(hours=1)
    scheduled = await cli(
        "distribute", "XVI/2026", "--at", at_text(due), "--override-notice", "powód"
    )
    assert scheduled.status == 0, scheduled.err
    dist_id = scheduled_id(scheduled)
    assert at_text(due) in scheduled.out
    (dist,) = await distributions(parts, "XVI/2026")
    assert (dist.id, dist.status, dist.override_reason) == (dist_id, "scheduled", "powód")
    assert parts.distributions().to_local(dist.due_at) == due

    # Sending at once and at a later time contradict each other; a time that does not exist
    # in Warsaw is refused too. Neither stores anything.
    contradiction = await cli(
        "distribute", "XVI/2026", "--at", at_text(due), "--send-now", "--override-notice", "x"
    )
    assert contradiction.status == 1 and "--send-now" in contradiction.err
    gap = await cli(
        "distribute", "XVI/2026", "--at", "2027-03-28 02:15", "--override-notice", "powód"
    )
    assert gap.status == 1 and "2027-03-28 02:15" in gap.err
    assert [d.id for d in await distributions(parts, "XVI/2026")] == [dist_id]

    listed = await cli("distributions", "list")
    assert listed.status == 0, listed.err
    (line,) = [ln for ln in listed.out.splitlines() if ln.startswith(f"#{dist_id} ")]
    assert "scheduled" in line and "override: powód" in line and at_text(due) in line

    cancelled = await cli("distributions", "cancel", str(dist_id))
    assert cancelled.status == 0, cancelled.err
    assert f"#{dist_id}" in cancelled.out and "cancelled" in cancelled.out
    (dist,) = await distributions(parts, "XVI/2026")
    assert dist.status == "cancelled"
    # Only a scheduled one can be cancelled.
    twice = await cli("distributions", "cancel", str(dist_id))
    assert twice.status == 1 and str(dist_id) in twice.err
    missing = await cli("distributions", "cancel", str(dist_id + 100))
    assert missing.status == 1 and str(dist_id + 100) in missing.err


async def test_send_now_delivers_once_to_each_councillor_and_the_reports_show_it(
    cli: Cli,
    parts: Parts,
    settings: Settings,
    add_councillor: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    people = [await add_councillor("Łukasz", "Żółć"), await add_councillor("Anna", "Nowak")]
    await create_session(cli, "XV/2026", 14)
    pdf = make_pdf(tmp_path / "projekt-uchwały-żłobki.pdf", 3, "Projekt uchwaly")
    attach = await cli(
        "sessions", "attach", "XV/2026", str(pdf), "--kind", "draft-resolution", "--item", "2"
    )
    assert attach.status == 0, attach.err
    sha = hashlib.sha256(pdf.read_bytes()).hexdigest()

    sent = await cli("distribute", "XV/2026", "--send-now")
    assert sent.status == 0, sent.err
    assert "Wysłano: 2 wiadomości, doręczono 2" in sent.out
    dist_id = scheduled_id(sent)
    (dist,) = await distributions(parts, "XV/2026")
    assert (dist.id, dist.status) == (dist_id, "sent")
    for person in people:
        inbox = await read_inbox(
            settings.stack.host, settings.stack.imap_port, person.address, person.password
        )
        assert len(inbox) == 1, person.address
        msg = message_from_bytes(inbox[0], policy=policy.default)
        assert "XV/2026" in str(msg["Subject"])
        assert [a.get_filename() for a in msg.iter_attachments()] == ["projekt-uchwały-żłobki.pdf"]

    refused = await cli("distributions", "cancel", str(dist_id))
    assert refused.status == 1 and "sent" in refused.err
    (dist,) = await distributions(parts, "XV/2026")
    assert dist.status == "sent"

    # The receipts report in each format.
    table = await cli("receipts", "XV/2026")
    assert table.status == 0, table.err
    assert "Żółć" in table.out and "Nowak" in table.out

    csv_path = tmp_path / "potwierdzenia.csv"
    as_csv = await cli("receipts", "XV/2026", "--format", "csv", "--output", str(csv_path))
    assert as_csv.status == 0, as_csv.err
    assert str(csv_path) in as_csv.err and as_csv.out == ""
    rows = list(csv.reader(io.StringIO(csv_path.read_text("utf-8-sig")), delimiter=";"))
    header, body = rows[0], rows[1:]
    code = header.index("Kod stanu")
    by_address = {r[header.index("Adres")]: r for r in body}
    assert sorted(by_address) == sorted(p.address for p in people)
    assert {r[code] for r in body} == {"delivered"}
    assert by_address[people[0].address][header.index("Radny/Radna")].endswith("Żółć")
    assert all(sha in r[header.index("Dokumenty (SHA-256)")] for r in body)

    as_json = await cli("receipts", "XV/2026", "--format", "json")
    assert as_json.status == 0, as_json.err
    report = json.loads(as_json.out)
    assert report["session"]["number"] == "XV/2026"
    assert [d["sha256"] for d in report["documents"]] == [sha]
    states = {r["address"]: [c["state"] for c in r["cells"]] for r in report["rows"]}
    assert states == {p.address: ["delivered"] for p in people}

    pdf_path = tmp_path / "potwierdzenia.pdf"
    as_pdf = await cli("receipts", "XV/2026", "--format", "pdf", "--output", str(pdf_path))
    assert as_pdf.status == 0, as_pdf.err
    data = pdf_path.read_bytes()
    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    assert "Łukasz Żółć" in text and sha in squeezed(text)

    # Before the cut-over every councillor gets paper too.
    before = {"MAILSVC_DISTRIBUTION__CUTOVER_DATE": "2099-01-01"}
    printed = await cli("print-list", "XV/2026", env=before)
    assert printed.status == 0, printed.err
    for person in people:
        assert f"<{person.address}>" in printed.out
    assert "Łukasz Żółć" in printed.out and "projekt-uchwały-żłobki.pdf (3 str.)" in printed.out
    assert "Adresatów: 2, stron razem: 6" in printed.out
    list_pdf = tmp_path / "druk.pdf"
    printed_pdf = await cli(
        "print-list", "XV/2026", "--format", "pdf", "--output", str(list_pdf), env=before
    )
    assert printed_pdf.status == 0, printed_pdf.err
    text = pdf_text(list_pdf.read_bytes())
    assert "Łukasz Żółć" in text and "Anna Nowak" in text

    # Paper saved: nothing before the cut-over; after it pages × cost for each councillor who
    # acknowledged (the others stay on the print list). One of the two acknowledges.
    (dist,) = await distributions(parts, "XV/2026")
    store = parts.distributions().store
    first = next(r for r in await store.recipients(dist.id) if r.address == people[0].address)
    assert await parts.distributions().acknowledge(first.id, dist.id, "pytest")
    nothing = json.loads((await cli("savings", "--json", env=before)).out)
    assert (nothing["pages"], Decimal(nothing["saved"])) == (0, Decimal(0))
    after = await cli("savings", "--json", env={"MAILSVC_DISTRIBUTION__CUTOVER_DATE": "2020-01-01"})
    assert after.status == 0, after.err
    saved = json.loads(after.out)
    cost = Decimal(settings.distribution.cost_per_page)
    assert saved["cutover"] == "2020-01-01"
    assert saved["sessions"] == [
        {"session": "XV/2026", "pages": 3, "deliveries": 1, "saved": str(3 * cost)}
    ]
    assert (saved["pages"], Decimal(saved["saved"])) == (3, 3 * cost)


# -- receipts parse ----------------------------------------------------------------------------

ORIGINAL_ID = "<5f3a9c.d7@rada.miasto.example>"


def dsn_message(failed: str) -> bytes:
    """A bounce as an MTA writes it (RFC 3464): multipart/report with a delivery-status part."""
    boundary = "=_report_42"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: bounces+abc@rada.miasto.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Wiadomości nie można było doręczyć.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        "Arrival-Date: Thu, 26 Nov 2026 10:00:00 +0100\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <radny@example.net>: user unknown\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {ORIGINAL_ID}\r\n"
        "Subject: Zawiadomienie o sesji XV/2026\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


async def test_receipts_parse_prints_the_contract_json_and_refuses_a_missing_file(
    bare_cli: Cli, tmp_path: Path
) -> None:
    dsn = tmp_path / "zwrot.eml"
    dsn.write_bytes(dsn_message("radny@example.net"))
    parsed = await bare_cli("receipts", "parse", str(dsn), "--json")
    assert parsed.status == 0, parsed.err
    report = json.loads(parsed.out)
    assert report["kind"] == "dsn"
    assert [
        {key: r[key] for key in ("address", "action", "status", "permanent", "reason")}
        for r in report["recipients"]
    ] == [
        {
            "address": "radny@example.net",
            "action": "failed",
            "status": "5.1.1",
            "permanent": True,
            "reason": "user_unknown",
        }
    ]
    assert report["original_message_id"] == ORIGINAL_ID

    as_text = await bare_cli("receipts", "parse", str(dsn))
    assert as_text.status == 0, as_text.err
    assert "kind: dsn" in as_text.out
    assert "radny@example.net: failed 5.1.1 (permanent) [user_unknown]" in as_text.out

    plain = tmp_path / "list.eml"
    plain.write_bytes(
        "From: Jan Mieszkaniec <jan@example.org>\r\nTo: radny@rada.miasto.example\r\n"
        "Subject: Dziura w jezdni\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Proszę o interwencję na ul. Długiej.\r\n".encode()
    )
    none = await bare_cli("receipts", "parse", str(plain), "--json")
    assert none.status == 0, none.err
    assert {k: json.loads(none.out)[k] for k in ("kind", "recipients")} == {
        "kind": "none",
        "recipients": [],
    }

    gone = tmp_path / "nie-ma-takiego.eml"
    missing = await bare_cli("receipts", "parse", str(gone), "--json")
    assert missing.status == 1
    assert missing.out == "" and str(gone) in missing.err and "nie można odczytać" in missing.err
    english = await bare_cli("receipts", "parse", str(gone), env={"MAILSVC_LANGUAGE": "en"})
    assert english.status == 1 and "cannot be read" in english.err
    no_file = await bare_cli("receipts", "parse")
    assert no_file.status == 1 and "FILE.eml" in no_file.err
