"""Rendering and composing what the service writes to councillors: mail, letters, headers."""

from __future__ import annotations

from datetime import date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import jinja2
import pytest

from mailsvc import compose, templating
from mailsvc.config import Settings

ADDRESS = "lukasz.zolc@rada.miasto.example"
NAME = "Łukasz Żółć"
INJECTION = "x\r\nBcc: evil@example.org"


@pytest.fixture
def settings() -> Settings:
    # Distinct client values, so a test can tell them from the local-stack defaults.
    return Settings().with_changes(
        clients={
            "imap_host": "imap.rada.miasto.example",
            "imap_port": 993,
            "imap_security": "tls",
            "smtp_host": "smtp.rada.miasto.example",
            "smtp_port": 465,
            "smtp_security": "tls",
        }
    )


def parse(msg: EmailMessage) -> EmailMessage:
    """What a receiving client sees: the serialised bytes parsed back."""
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def simple_message(**changes: object) -> EmailMessage:
    kwargs: dict[str, object] = {
        "from_addr": ("Biuro Rady", "biuro@rada.miasto.example"),
        "to": (NAME, ADDRESS),
        "subject": "Temat",
        "text": "Treść",
        "message_id_domain": "rada.miasto.example",
    }
    kwargs.update(changes)
    return compose.build_message(**kwargs)  # type: ignore[arg-type]


# -- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "polish", "english"),
    [
        (date(2024, 5, 7), "7 maja 2024", "7 May 2024"),
        (date(2024, 1, 1), "1 stycznia 2024", "1 January 2024"),
        (date(2024, 2, 29), "29 lutego 2024", "29 February 2024"),
        (date(2023, 3, 15), "15 marca 2023", "15 March 2023"),
        (date(2023, 4, 30), "30 kwietnia 2023", "30 April 2023"),
        (date(2023, 6, 2), "2 czerwca 2023", "2 June 2023"),
        (date(2023, 7, 3), "3 lipca 2023", "3 July 2023"),
        (date(2023, 8, 31), "31 sierpnia 2023", "31 August 2023"),
        (date(2023, 9, 9), "9 września 2023", "9 September 2023"),
        (date(2023, 10, 10), "10 października 2023", "10 October 2023"),
        (date(2023, 11, 11), "11 listopada 2023", "11 November 2023"),
        (datetime(2023, 12, 24, 18, 30), "24 grudnia 2023", "24 December 2023"),
    ],
)
def test_long_dates_use_polish_genitive_months_and_english_names(
    value: date, polish: str, english: str
) -> None:
    assert templating.format_date_pl(value) == polish
    assert templating.format_date_en(value) == english
    assert templating.format_date(value, "pl") == polish
    assert templating.format_date(value, "en") == english


def test_date_filters_are_available_in_templates() -> None:
    env = templating.environment()
    rendered = env.from_string("{{ d|date_pl }} / {{ d|date_en }}").render(d=date(2024, 5, 7))
    assert rendered == "7 maja 2024 / 7 May 2024"


# -- template selection ----------------------------------------------------------------------


@pytest.fixture
def tmp_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "note.pl.txt.j2").write_text("PL {{ who }} {{ lang }}", encoding="utf-8")
    (tmp_path / "mail" / "note.pl.html.j2").write_text("PL {{ who }}", encoding="utf-8")
    (tmp_path / "mail" / "note.en.html.j2").write_text("EN {{ who }}", encoding="utf-8")
    monkeypatch.setattr(templating, "TEMPLATES_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "language", "expected"),
    [
        ("mail/note.txt", "pl", "PL <b> pl"),  # plain text: not escaped
        ("mail/note.txt", "en", "PL <b> pl"),  # no English file: Polish, and lang says so
        ("mail/note.txt", "de", "PL <b> pl"),
        ("mail/note.html", "en", "EN &lt;b&gt;"),  # English file present: used, escaped
        ("mail/note.html", "pl", "PL &lt;b&gt;"),
    ],
)
def test_render_picks_the_language_file_and_falls_back_to_polish(
    tmp_templates: Path, name: str, language: str, expected: str
) -> None:
    assert templating.render(name, language, who="<b>") == expected


def test_render_refuses_missing_variables_and_missing_templates(tmp_templates: Path) -> None:
    with pytest.raises(jinja2.UndefinedError):
        templating.render("mail/note.txt", "pl")
    with pytest.raises(jinja2.TemplatesNotFound):
        templating.render("mail/absent.txt", "en", who="x")


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("../secret.txt", "pl"),
        ("mail/note", "pl"),
        ("mail/note.txt", "../x"),
        ("a/b.c.txt", "pl"),
        ("mail/note.txt", "pl\n"),
    ],
)
def test_render_rejects_names_and_languages_outside_the_scheme(name: str, language: str) -> None:
    with pytest.raises(ValueError):
        templating.template_names(name, language)


def test_every_shipped_template_has_both_languages() -> None:
    for pl in templating.TEMPLATES_DIR.rglob("*.pl.*.j2"):
        assert pl.with_name(pl.name.replace(".pl.", ".en.")).exists(), pl


# -- build_message ---------------------------------------------------------------------------


def test_diacritics_in_names_and_subject_survive_serialisation() -> None:
    msg = simple_message(subject="Zażółć gęślą jaźń", text=f"Dzień dobry, {NAME}.")
    raw = msg.as_bytes()
    assert raw.isascii()  # encoded words and quoted-printable: no 8BITMIME needed
    assert b"\r\n\r\n" in raw  # SMTP line endings
    parsed = parse(msg)
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (NAME, ADDRESS)
    assert parsed["Subject"] == "Zażółć gęślą jaźń"
    assert f"Dzień dobry, {NAME}." in body(parsed, "plain")
    assert parsed["Message-ID"].endswith("@rada.miasto.example>")
    assert parsed["Date"].datetime is not None


def test_html_makes_the_message_multipart_alternative() -> None:
    parsed = parse(simple_message(html="<p>Treść</p>"))
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert body(parsed, "html").strip() == "<p>Treść</p>"
    assert parse(simple_message()).get_content_type() == "text/plain"


@pytest.mark.parametrize(
    "field",
    ["to_name", "from_name", "subject", "extra_header"],
)
@pytest.mark.parametrize(
    "attack",
    [
        INJECTION,
        "x\nBcc: evil@example.org",
        "x\rBcc: evil@example.org",
        "x\u2028Bcc: evil@example.org",
        "x\x85Bcc: evil@example.org",
        "x\x00\r\n\r\nBcc: evil@example.org",
    ],
)
def test_line_breaks_in_header_text_never_create_a_header(field: str, attack: str) -> None:
    table: dict[str, dict[str, object]] = {
        "to_name": {"to": (attack, ADDRESS)},
        "from_name": {"from_addr": (attack, "biuro@rada.miasto.example")},
        "subject": {"subject": attack},
        "extra_header": {"headers": {"X-Note": attack}},
    }
    changes = table[field]
    parsed = parse(simple_message(**changes))
    assert parsed["Bcc"] is None
    expected = {"from", "to", "subject", "date", "message-id", "mime-version"}
    expected |= {"content-type", "content-transfer-encoding"}
    if field == "extra_header":
        expected.add("x-note")
    assert {key.lower() for key in parsed.keys()} == expected
    assert [a.addr_spec for a in parsed["To"].addresses] == [ADDRESS]
    # The text is kept, on one line.
    if field in ("to_name", "from_name"):
        shown = parsed["To" if field == "to_name" else "From"].addresses[0].display_name
    else:
        shown = str(parsed["Subject" if field == "subject" else "X-Note"])
    assert "Bcc: evil@example.org" in shown
    assert not any(ch in shown for ch in "\r\n\x00\x85\u2028")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to": (NAME, "lukasz.zolc@@rada.miasto.example")}, "to"),
        ({"to": (NAME, "lukasz.zolc")}, "to"),
        ({"to": (NAME, "lukasz zolc@rada.miasto.example")}, "to"),
        ({"to": (NAME, f"{ADDRESS}\r\nBcc: evil@example.org")}, "to"),
        ({"to": (NAME, "a@b@rada.miasto.example")}, "to"),
        ({"to": (NAME, "evil@example.org, lukasz.zolc@rada.miasto.example")}, "to"),
        ({"to": (NAME, "<lukasz.zolc@rada.miasto.example>")}, "to"),
        ({"to": (NAME, "@rada.miasto.example")}, "to"),
        ({"to": (NAME, "łukasz@rada.miasto.example")}, "to"),
        ({"from_addr": ("Biuro", "biuro@rada miasto.example")}, "from_addr"),
        ({"from_addr": ("Biuro", "biuro@")}, "from_addr"),
        ({"message_id_domain": "rada.miasto.example\r\nBcc: x"}, "message_id_domain"),
        ({"message_id_domain": "rada.miasto.example\n"}, "message_id_domain"),
        ({"headers": {"X-Bad\r\nBcc": "x"}}, "headers"),
        ({"headers": {"X-Note\n": "x"}}, "headers"),
        ({"headers": {"X Note": "x"}}, "headers"),
        ({"headers": {"Bcc": "evil@example.org"}}, "headers"),
        ({"headers": {"Content-Type": "text/html"}}, "headers"),
    ],
)
def test_unusable_addresses_and_header_names_raise_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        simple_message(**changes)


def test_extra_headers_are_kept_on_the_top_level_message() -> None:
    parsed = parse(simple_message(html="<p>x</p>", headers={"Content-Language": "pl"}))
    assert parsed["Content-Language"] == "pl"


# -- welcome message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "subject", "phrases"),
    [
        (
            "pl",
            "Witamy w poczcie Rady Miasta Przykładowo",
            ["Dzień dobry", "Poczta przychodząca (IMAP)", "potwierdzenia odbioru", "SSL/TLS"],
        ),
        (
            "en",
            "Welcome to your Rada Miasta Przykładowo mailbox",
            ["Hello", "Incoming mail (IMAP)", "confirmation link", "SSL/TLS"],
        ),
    ],
)
def test_welcome_message_in_the_configured_language(
    settings: Settings, language: str, subject: str, phrases: list[str]
) -> None:
    msg = compose.welcome_message(
        settings.with_changes(language=language), display_name=NAME, address=ADDRESS
    )
    parsed = parse(msg)
    assert parsed["Subject"] == subject
    (sender,) = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Rada Miasta Przykładowo",
        settings.office_address,
    )
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (NAME, ADDRESS)
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Content-Language"] == language
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = body(parsed, "plain"), body(parsed, "html")
    assert f'<html lang="{language}">' in html
    for part in (text, html):
        for phrase in [*phrases, NAME, ADDRESS, "imap.rada.miasto.example", "993"]:
            assert phrase in part
        for phrase in ["smtp.rada.miasto.example", "465"]:
            assert phrase in part
        for phrase in ["informatyk@urzad.miasto.example", "+48 12 345 67 89"]:
            assert phrase in part
        assert settings.office_address in part


def test_welcome_message_names_the_cutover_date_when_given(settings: Settings) -> None:
    msg = compose.welcome_message(
        settings, display_name=NAME, address=ADDRESS, cutover=date(2024, 5, 7)
    )
    parsed = parse(msg)
    assert "Od 7 maja 2024 zawiadomienia o sesjach wraz z" in body(parsed, "plain")
    assert "Od <strong>7 maja 2024</strong>" in body(parsed, "html")


def test_welcome_message_escapes_html_only_in_the_html_part(settings: Settings) -> None:
    name = "Anna <b>Nowak</b> & syn"
    parsed = parse(compose.welcome_message(settings, display_name=name, address=ADDRESS))
    assert name in body(parsed, "plain")
    html = body(parsed, "html")
    assert "Anna &lt;b&gt;Nowak&lt;/b&gt; &amp; syn" in html
    assert "<b>Nowak" not in html


@pytest.mark.parametrize(
    ("name", "genitive"),
    [
        ("Rada Miasta Przykładowo", "Rady Miasta Przykładowo"),
        ("Rada Miejska w Łodzi", "Rady Miejskiej w Łodzi"),
        ("Rada Gminy Wola", "Rady Gminy Wola"),
        ("Rada Gminna", "Rady Gminnej"),
        ("Rada Powiatowa", "Rady Powiatowej"),
        ("Rada Sołectwa", "Rady Sołectwa"),
        ("Sejmik Województwa", "Sejmik Województwa"),
    ],
)
def test_council_name_in_the_polish_genitive(name: str, genitive: str) -> None:
    assert compose.council_genitive_pl(name) == genitive


# -- credentials letters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "phrases"),
    [
        ("pl", ['<html lang="pl">', "Hasło", "Potwierdzenie odbioru", "Podpis", "7 maja 2024"]),
        (
            "en",
            ['<html lang="en">', "Password", "Confirmation of receipt", "Signature", "7 May 2024"],
        ),
    ],
)
def test_credentials_letter_holds_what_the_councillor_needs(
    settings: Settings, language: str, phrases: list[str]
) -> None:
    letter = compose.credentials_letter(
        settings.with_changes(language=language),
        display_name=NAME,
        address=ADDRESS,
        password="Xy7kPq9mRt4wZb2nHs6v",
        district="Okręg nr 3",
        issued=date(2024, 5, 7),
    )
    for phrase in [
        *phrases,
        NAME,
        ADDRESS,
        "Xy7kPq9mRt4wZb2nHs6v",
        "Okręg nr 3",
        "imap.rada.miasto.example",
        "993",
        "smtp.rada.miasto.example",
        "465",
        "informatyk@urzad.miasto.example",
        "+48 12 345 67 89",
        "size: A4",
    ]:
        assert phrase in letter
    # The password is printed once, above the cut line; the office keeps the part below.
    assert letter.count("Xy7kPq9mRt4wZb2nHs6v") == 1
    assert letter.index("Xy7kPq9mRt4wZb2nHs6v") < letter.index('class="cut"')


def test_credentials_letter_escapes_every_value(settings: Settings) -> None:
    letter = compose.credentials_letter(
        settings,
        display_name="<script>alert(1)</script>",
        address=ADDRESS,
        password="a<b&c",
        district='"><img src=x>',
    )
    assert "<script>" not in letter
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in letter
    assert "a&lt;b&amp;c" in letter
    assert "<img" not in letter


def test_credentials_letter_omits_the_district_row_without_a_district(settings: Settings) -> None:
    letter = compose.credentials_letter(
        settings, display_name=NAME, address=ADDRESS, password="Xy7kPq9mRt4wZb2nHs6v"
    )
    assert "Okręg wyborczy" not in letter
    assert templating.format_date_pl(date.today()) in letter


def test_credentials_letters_put_each_councillor_on_its_own_page(settings: Settings) -> None:
    items = [
        compose.CouncillorCredentials(NAME, ADDRESS, "Xy7kPq9mRt4wZb2nHs6v"),
        compose.CouncillorCredentials(
            "Anna Nowak", "anna.nowak@rada.miasto.example", "Pq9mRt4wZb2nHs6vXy7k", "Okręg nr 1"
        ),
    ]
    document = compose.credentials_letters(settings, items, issued=date(2024, 5, 7))
    assert document.count("<!DOCTYPE html>") == 1
    assert document.count('<section class="letter">') == 2
    assert "break-after: page" in document
    first, second = document.split('<section class="letter">')[1:]
    assert "Xy7kPq9mRt4wZb2nHs6v" in first and ADDRESS in first
    assert "Pq9mRt4wZb2nHs6vXy7k" in second and "anna.nowak@rada.miasto.example" in second
    assert "Xy7kPq9mRt4wZb2nHs6v" not in second
    assert "Xy7kPq9mRt4wZb2nHs6v" not in repr(items[0])  # never in logs or tracebacks


def test_credentials_letters_refuse_an_empty_batch(settings: Settings) -> None:
    with pytest.raises(ValueError, match="nothing to print"):
        compose.credentials_letters(settings, [])


# -- pointing to the automatic setup ---------------------------------------------------------

PROFILE_URL = f"https://rada.miasto.example/mobileconfig?email={ADDRESS}"
AUTOCONFIG_URL = "https://rada.miasto.example/.well-known/autoconfig/mail/config-v1.1.xml"


@pytest.mark.parametrize(
    ("language", "phrases"),
    [
        ("pl", ["Thunderbird, Outlook", "iPhone, iPad", "wpisać je ręcznie", "587 lub 465"]),
        ("en", ["Thunderbird, Outlook", "iPhone, iPad", "enter them by hand", "587 or 465"]),
    ],
)
def test_letter_and_welcome_point_to_the_automatic_setup_and_both_submission_ports(
    settings: Settings, language: str, phrases: list[str]
) -> None:
    configured = settings.with_changes(
        language=language,
        clients={"smtp_port": 587, "smtp_security": "starttls", "smtps_port": 465},
        web={"public_url": "https://rada.miasto.example/"},
    )
    letter = compose.credentials_letter(
        configured, display_name=NAME, address=ADDRESS, password="Xy7kPq9mRt4wZb2nHs6v"
    )
    for phrase in [*phrases, PROFILE_URL, AUTOCONFIG_URL, "STARTTLS (587), SSL/TLS (465)"]:
        assert phrase in letter
    welcome = parse(compose.welcome_message(configured, display_name=NAME, address=ADDRESS))
    for part in (body(welcome, "plain"), body(welcome, "html")):
        for phrase in ["Thunderbird, Outlook", PROFILE_URL, AUTOCONFIG_URL, "465"]:
            assert phrase in part
    assert f'<a href="{PROFILE_URL}">' in body(welcome, "html")


def test_implicit_tls_is_mentioned_only_when_offered(settings: Settings) -> None:
    plain = settings.with_changes(clients={"smtp_port": 587, "smtp_security": "starttls"})
    letter = compose.credentials_letter(
        plain, display_name=NAME, address=ADDRESS, password="Xy7kPq9mRt4wZb2nHs6v"
    )
    assert "465" not in letter and " lub " not in letter
    welcome = parse(compose.welcome_message(plain, display_name=NAME, address=ADDRESS))
    assert "465" not in body(welcome, "plain") and "465" not in body(welcome, "html")
