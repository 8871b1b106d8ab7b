"""DNs and LDIF for the local directory: the entries a new directory starts with.

A small codec, enough for the DNs in the [directory] settings: single-valued RDNs, RFC 4514
escapes (``\\,`` and ``\\2c`` alike), and LDIF values that fall back to base64 when they are not
plain ASCII. The base entries are built from those DNs, so the file is made here, not from a
template.
"""

from __future__ import annotations

import base64

from mailsvc.config import DirectorySettings
from mailsvc.stack.errors import StackError

Rdns = list[tuple[str, str]]
Entry = list[tuple[str, str]]


def base_ldif(d: DirectorySettings, reader_hash: str) -> str:
    """The entries a new directory starts with: suffix, containers and the reader entry."""
    base = parse_dn(d.base_dn)
    entries: list[Entry] = [_suffix_entry(base)]
    created = {dn_key(base)}

    def below_base(dn: str, setting: str) -> Rdns:
        """``dn`` parsed, after adding the containers between it and the base entry."""
        rdns = parse_dn(dn)
        if len(rdns) <= len(base) or dn_key(rdns[-len(base) :]) != dn_key(base):
            raise StackError(f"directory.{setting} = {dn!r}: expected a DN below {d.base_dn!r}")
        for depth in range(len(rdns) - len(base) - 1, 0, -1):
            parent = rdns[depth:]
            if dn_key(parent) not in created:
                entries.append(_container_entry(parent))
                created.add(dn_key(parent))
        return rdns

    groups_dn = f"ou=groups,{d.base_dn}"
    containers = (
        (d.councillors_dn, "councillors_rdn"),
        (groups_dn, "base_dn"),
        (d.staff_dn, "staff_rdn"),
    )
    for dn, setting in containers:
        rdns = below_base(dn, setting)
        if dn_key(rdns) not in created:
            entries.append(_container_entry(rdns))
            created.add(dn_key(rdns))
    reader = below_base(d.reader_dn, "reader_dn")
    attr, value = reader[0]
    if attr.lower() != "cn":
        raise StackError(f"directory.reader_dn = {d.reader_dn!r}: expected a cn=... entry")
    entries.append(
        [
            ("dn", format_dn(reader)),
            ("objectClass", "organizationalRole"),
            ("objectClass", "simpleSecurityObject"),
            ("cn", value),
            ("description", "mailsvc: the mailbox store reads the directory as this entry"),
            ("userPassword", reader_hash),
        ]
    )
    return "\n".join("".join(ldif_line(a, v) for a, v in entry) for entry in entries)


def _suffix_entry(rdns: Rdns) -> Entry:
    attr, value = rdns[0]
    dn = ("dn", format_dn(rdns))
    if attr.lower() == "dc":
        org = ".".join(v for a, v in rdns if a.lower() == "dc")
        return [
            dn,
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", value),
            ("o", org),
        ]
    if attr.lower() in ("o", "ou"):
        return _container_entry(rdns)
    raise StackError(
        f"directory.base_dn = {format_dn(rdns)!r}: the local stack can create a base entry "
        "named dc=, o= or ou= only"
    )


def _container_entry(rdns: Rdns) -> Entry:
    attr, value = rdns[0]
    classes = {"ou": "organizationalUnit", "o": "organization"}
    if attr.lower() not in classes:
        raise StackError(
            f"cannot create {format_dn(rdns)!r}: the local stack creates ou= or o= containers only"
        )
    return [("dn", format_dn(rdns)), ("objectClass", classes[attr.lower()]), (attr, value)]


# -- DN codec ------------------------------------------------------------------------------


def parse_dn(dn: str) -> Rdns:
    """Split a DN into (attribute, unescaped value) pairs; multi-valued RDNs are not needed."""
    rdns: Rdns = []
    for part in _split_unescaped(dn, ","):
        pieces = _split_unescaped(part, "=", maxsplit=1)
        if len(pieces) != 2 or not pieces[0].strip() or _split_unescaped(part, "+")[1:]:
            raise StackError(f"cannot understand the DN {dn!r}: expected attr=value,attr=value")
        rdns.append((pieces[0].strip(), _unescape_dn_value(pieces[1].strip())))
    return rdns


def format_dn(rdns: Rdns) -> str:
    return ",".join(f"{attr}={_escape_dn_value(value)}" for attr, value in rdns)


def dn_key(rdns: Rdns) -> tuple[tuple[str, str], ...]:
    """What two spellings of the same DN have in common (attribute and value case ignored)."""
    return tuple((attr.lower(), value.lower()) for attr, value in rdns)


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep and maxsplit != 0:
            parts.append("".join(current))
            current = []
            maxsplit -= 1
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_dn_value(value: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            raw += value[i + 1].encode()
            i += 2
            continue
        raw += value[i].encode()
        i += 1
    return raw.decode("utf-8")


def _escape_dn_value(value: str) -> str:
    out = "".join(f"\\{ch}" if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


# -- LDIF ----------------------------------------------------------------------------------


def ldif_line(attr: str, value: str) -> str:
    """``attr: value``, or ``attr:: base64`` when the value is not safe as plain text."""
    safe = (
        value.isascii()
        and value == value.strip()
        and not value.startswith((":", "<"))
        and "\n" not in value
        and "\r" not in value
        and "\0" not in value
    )
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"
