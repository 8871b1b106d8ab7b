"""Values that try to break out of the generated slapd and Dovecot files stay inside them.

Each file is rendered once with plain settings and once with settings full of quotes,
backslashes, comment marks, variables and would-be directives; the hostile file must keep the
plain file's lines (same count, same keywords) and give each value back when unquoted the way
slapd and Dovecot unquote. Values a file cannot hold (line breaks) must be refused. The real
parsers read such files in tests/integration/test_stack_configs.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from mailsvc.config import Settings
from mailsvc.stack import StackError, configs
from mailsvc.stack.configs import DovecotIdentity
from mailsvc.stack.layout import Paths
from mailsvc.stack.ldif import format_dn, parse_dn
from tests.unit.stack.scenarios import NOT_ROOT, ROOTPW_HASH, default_settings

# Everything either file format gives a meaning to, plus text that reads like a directive.
HOSTILE = "q\"uote \\back\\slash\\ #hash 'single' %u $x ${y} {z} <file ; by * write"
PASSWORD = HOSTILE + ' \\"'  # ends in backslash + quote: the classic unquoting trap


def hostile_settings() -> Settings:
    base = "o=" + HOSTILE
    return default_settings().with_changes(
        directory={
            "base_dn": base,
            "admin_dn": f"cn={HOSTILE},{base}",
            "reader_dn": f"cn={HOSTILE},{base}",
            "reader_password": PASSWORD,
            "councillors_rdn": f"ou={HOSTILE}",
            "person_object_class": "inetOrgPerson)(|(objectClass=*",
            "disabled_value": HOSTILE + ")(x=*\n\r\0",
        }
    )


def shape(text: str) -> list[str]:
    """The first word of every line: what a value would change if it broke out of its line."""
    return [line.strip().split(" ", 1)[0] for line in text.split("\n")]


def quoted(line: str) -> list[str]:
    """The double-quoted arguments of a line, unquoted as slapd (strtok_quote) and Dovecot
    (str_unescape) both do: a backslash takes the next character literally."""
    tokens = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    return [re.sub(r"\\(.)", r"\1", token, flags=re.DOTALL) for token in tokens]


def line_of(text: str, key: str) -> str:
    [line] = [line for line in text.split("\n") if line.strip().startswith(key)]
    return line


def decode_filter_value(value: str) -> str:
    """A constant from Dovecot's filter template as the directory sees it: %% is %, \\XX a byte."""
    raw = bytearray()
    for token in re.findall(r"%%|\\[0-9a-f]{2}|.", value, flags=re.DOTALL):
        if token == "%%":
            raw += b"%"
        elif token.startswith("\\"):
            raw.append(int(token[1:], 16))
        else:
            raw += token.encode()
    return raw.decode()


# -- the renderer ----------------------------------------------------------------------------


def test_a_template_may_print_only_filtered_text_and_numbers(tmp_path: Path) -> None:
    env = configs.environment(tmp_path)

    assert env.from_string("a = {{ v|dovecot_quote }} {{ n }}").render(v='x"', n=3) == (
        'a = "x\\"" 3'
    )
    for unfiltered in ("text", Path("/srv"), True, None):
        with pytest.raises(TypeError, match="without an escaping filter"):
            env.from_string("a = {{ v }}").render(v=unfiltered)
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("a = {{ missing|dovecot_quote }}").render()


# -- hostile values stay inside their lines --------------------------------------------------


def test_hostile_directory_values_stay_inside_their_slapd_conf_lines() -> None:
    plain, hostile = default_settings(), hostile_settings()
    paths = Paths.of(plain.var_dir)

    before = configs.slapd_conf(plain, paths, ROOTPW_HASH)
    after = configs.slapd_conf(hostile, paths, ROOTPW_HASH)

    assert shape(after) == shape(before)
    d = hostile.directory
    assert quoted(line_of(after, "suffix ")) == [d.base_dn]
    assert quoted(line_of(after, "rootdn ")) == [d.admin_dn]
    reader_rule = line_of(after, "by dn.exact=")
    assert quoted(reader_rule) == [d.reader_dn]
    assert reader_rule.endswith('" read')


def test_hostile_directory_values_stay_inside_their_dovecot_ldap_conf_lines() -> None:
    plain, hostile = default_settings(), hostile_settings()
    paths = Paths.of(plain.var_dir)

    before = configs.dovecot_ldap_conf(plain, paths, NOT_ROOT, "Reader-Pass-1")
    after = configs.dovecot_ldap_conf(hostile, paths, NOT_ROOT, PASSWORD)

    assert shape(after) == shape(before)
    d = hostile.directory
    assert quoted(line_of(after, "dn ")) == [d.reader_dn]
    assert quoted(line_of(after, "dnpass ")) == [PASSWORD]
    assert quoted(line_of(after, "base ")) == [d.councillors_dn]
    for key in ("pass_filter", "user_filter", "iterate_filter"):
        value = line_of(after, key).split(" = ", 1)[1]
        # Dovecot's line reader would take a quote or '#' for the start of a string or comment:
        # in a constant they appear only as \XX escapes.
        unescaped = re.sub(r"\\[0-9a-f]{2}", "", value)
        assert not re.search(r"[\\\"'#\x00-\x1f]", unescaped), value
        # Same filter structure as the plain file: constants did not add or close a parenthesis.
        skeleton = re.sub(r"=[^()]*", "=", value)
        plain_value = line_of(before, key).split(" = ", 1)[1]
        assert skeleton == re.sub(r"=[^()]*", "=", plain_value)
    active = line_of(after, "pass_filter").split(" = ", 1)[1]
    person, disabled = re.fullmatch(
        r"\(&\(objectClass=(.*)\)\(mail=%u\)\(!\(employeeType=(.*)\)\)\)", active
    ).groups()  # type: ignore[union-attr]
    assert decode_filter_value(person) == d.person_object_class
    assert decode_filter_value(disabled) == d.disabled_value


def tls_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.startswith("tls")]


def test_dovecot_uses_starttls_with_the_directory_ca_when_starttls_is_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative ca_file is taken from the working directory
    settings = default_settings().with_changes(
        directory={
            "url": "ldap://ldap.council.example:389",
            "starttls": True,
            "ca_file": 'ca "council" #1.pem',
        }
    )
    text = configs.dovecot_ldap_conf(settings, Paths.of(settings.var_dir), NOT_ROOT, "x")
    assert line_of(text, "uris ") == "uris = ldap://ldap.council.example:389"
    assert tls_lines(text) == [
        "tls = yes",
        "tls_require_cert = hard",
        line_of(text, "tls_ca_cert_file "),
    ]
    # Absolute (Dovecot's auth process has its own working directory) and quoted.
    assert quoted(line_of(text, "tls_ca_cert_file ")) == [str(tmp_path / 'ca "council" #1.pem')]


def test_dovecot_verifies_an_ldaps_directory_without_starttls() -> None:
    settings = default_settings().with_changes(
        directory={"url": "ldaps://ldap.council.example", "ca_file": "/etc/council-ca.pem"}
    )
    text = configs.dovecot_ldap_conf(settings, Paths.of(settings.var_dir), NOT_ROOT, "x")
    assert tls_lines(text) == [
        "tls_require_cert = hard",
        'tls_ca_cert_file = "/etc/council-ca.pem"',
    ]


def test_the_embedded_default_has_no_tls_settings_for_dovecot() -> None:
    settings = default_settings()
    text = configs.dovecot_ldap_conf(settings, Paths.of(settings.var_dir), NOT_ROOT, "x")
    assert tls_lines(text) == []


@pytest.mark.parametrize(
    ("setting", "render"),
    [
        ("base_dn", "slapd"),
        ("admin_dn", "slapd"),
        ("reader_dn", "slapd"),
        ("reader_dn", "dovecot"),
        ("councillors_rdn", "dovecot"),
    ],
)
@pytest.mark.parametrize("breaks", ["\n", "\r", "\0"])
def test_line_breaks_in_directory_values_are_refused_naming_the_setting(
    setting: str, render: str, breaks: str
) -> None:
    settings = default_settings()
    value = getattr(settings.directory, setting) + breaks + "rootpw secret"
    settings = settings.with_changes(directory={setting: value})
    paths = Paths.of(settings.var_dir)

    with pytest.raises(StackError, match=rf"^directory\.{setting}: .*line breaks"):
        if render == "slapd":
            configs.slapd_conf(settings, paths, ROOTPW_HASH)
        else:
            configs.dovecot_ldap_conf(settings, paths, NOT_ROOT, "pw")


def test_a_password_with_a_line_break_is_refused_without_showing_it() -> None:
    settings = default_settings()

    with pytest.raises(StackError) as raised:
        configs.dovecot_ldap_conf(settings, Paths.of(settings.var_dir), NOT_ROOT, "se\ncret")

    assert str(raised.value).startswith("directory.reader_password: ")
    assert "cret" not in str(raised.value)


@pytest.mark.parametrize("key", ["mail_attribute", "status_attribute"])
@pytest.mark.parametrize("value", ["mail)(uid=*", "mail #x", "", "mail\n"])
def test_attribute_names_that_are_not_names_are_refused(key: str, value: str) -> None:
    settings = default_settings().with_changes(directory={key: value})

    with pytest.raises(StackError, match=rf"^directory\.{key} = "):
        configs.dovecot_ldap_conf(settings, Paths.of(settings.var_dir), NOT_ROOT, "pw")


@pytest.mark.parametrize("host", ["127.0.0.1\nlisten = *", "127.0.0.1 ::1", "h#x", "$x", ""])
def test_a_host_that_would_need_quoting_in_dovecot_conf_is_refused(host: str) -> None:
    settings = default_settings().with_changes(stack={"host": host})

    with pytest.raises(StackError, match=r"^stack\.host: "):
        configs.dovecot_mailsvc_conf(settings, Paths.of(settings.var_dir), NOT_ROOT)


@pytest.mark.parametrize("var_dir", ["/srv/a b", "/srv/a{b}", "/srv/a:b", "/srv/a%d", "/srv/a\nb"])
def test_a_var_dir_that_would_need_quoting_in_dovecot_conf_is_refused(var_dir: str) -> None:
    settings = default_settings()

    paths = Paths.of(Path(var_dir))

    with pytest.raises(StackError, match=r"^var_dir: "):
        configs.dovecot_conf(paths, NOT_ROOT, paths.dovecot_mailsvc_conf)
    with pytest.raises(StackError, match=r"^var_dir: "):
        configs.dovecot_mailsvc_conf(settings, paths, NOT_ROOT)


def test_a_user_name_that_would_need_quoting_in_dovecot_conf_is_refused() -> None:
    settings = default_settings()
    who = DovecotIdentity(False, 1000, 1000, "clerk\ndefault_login_user = root", "council", 1000)

    paths = Paths.of(settings.var_dir)

    with pytest.raises(StackError, match="the user running the stack"):
        configs.dovecot_conf(paths, who, paths.dovecot_mailsvc_conf)


def test_master_users_file_refuses_a_hash_with_its_field_separator() -> None:
    assert configs.master_users("{SSHA}abc=") == "master:{SSHA}abc=\n"
    with pytest.raises(StackError):
        configs.master_users("{SSHA}abc:uid=0")


def test_filter_constants_are_escaped_for_rfc_4515_and_dovecot() -> None:
    value = configs.ldap_filter_value("a*(b)\\c\0d%e\"f'g#h\ni ż")

    assert value == "a\\2a\\28b\\29\\5cc\\00d%%e\\22f\\27g\\23h\\0ai ż"
    assert decode_filter_value(value) == "a*(b)\\c\0d%e\"f'g#h\ni ż"


# -- DN codec --------------------------------------------------------------------------------


def test_dn_values_are_unescaped_and_escaped_again() -> None:
    rdns = parse_dn('cn=mail\\"store\\5c #1,ou=Radni\\, 2024 , o=Rada Przykładowo')

    assert rdns == [("cn", 'mail"store\\ #1'), ("ou", "Radni, 2024"), ("o", "Rada Przykładowo")]
    assert format_dn(rdns) == 'cn=mail\\"store\\\\ #1,ou=Radni\\, 2024,o=Rada Przykładowo'
    assert parse_dn(format_dn(rdns)) == rdns
