"""The slapd, Samba and Dovecot configuration files of the local stack, from templates/stack/*.j2
(mailsvc/stack/system.py renders the same templates for the system's slapd and Dovecot).

The templates hold the files' text; this module gathers the values and supplies the filters that
escape them for each file's own syntax. A template may print only what one of those filters
returned (or an int): the environment refuses anything else, so no setting reaches a file
unescaped, and a quote, backslash or line break in a setting cannot start a line of its own.
A value a file cannot hold at all raises StackError naming the setting (never its value, which
may be a password).
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from mailsvc import mailstore, templating
from mailsvc.config import DirectorySettings, Settings
from mailsvc.stack.errors import INSTALL_COMMAND, StackError
from mailsvc.stack.layout import Paths, var_dir_digest

SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "inetorgperson")
LDAP_MODULE_DIR = Path("/usr/lib/ldap")
# Parts of the Debian packages that are not the configured executables.
SUPPORT_FILES = (
    LDAP_MODULE_DIR / "back_mdb.so",
    LDAP_MODULE_DIR / "argon2.so",
    *(SCHEMA_DIR / f"{name}.schema" for name in SCHEMAS),
    Path("/usr/lib/dovecot/imap"),
    Path("/usr/lib/dovecot/lmtp"),
    Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so"),
)
_MDB_MAXSIZE = 1 << 30  # 1 GiB map: far above a council's directory, sparse on disk

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters that would need quoting or mean something (variables, list separators) in slapd or
# Dovecot configuration files; var_dir must not contain them.
UNSAFE_PATH = re.compile(r"[\s\"'\\%$#{},:;=\x00-\x1f\x7f]")
# Unquoted slapd.conf argument: one token.
_SLAPD_WORD_UNSAFE = re.compile(r"[\s\"'\\\x00-\x1f\x7f]")
# Unquoted Dovecot value: nothing that starts a comment, quote, section, variable ($name, %x) or
# file reference (<file), and no list separators.
_DOVECOT_WORD_UNSAFE = re.compile(r"[\s\"'\\#{}$%<>,;=\x00-\x1f\x7f]")
# A field of Dovecot's passwd-file: fields are separated by ':'.
_PASSWD_FIELD_UNSAFE = re.compile(r"[\s:\x00-\x1f\x7f]")
# A value in smb.conf: to the end of the line, stripped; no continuation or substitution.
_SAMBA_UNSAFE = re.compile(r"[\s\\%\x00-\x1f\x7f]")
_LDAP_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")
_GENERATED = "a generated value"


# -- values ----------------------------------------------------------------------------------


def slapd_conf(settings: Settings, paths: Paths, rootpw_hash: str) -> str:
    return render_slapd_conf(settings.directory, rootpw_hash, paths.ldap_data)


def render_slapd_conf(
    d: DirectorySettings, rootpw_hash: str, data_dir: Path, run_dir: Path | None = None
) -> str:
    """slapd.conf for the [directory] settings, its database in ``data_dir``. With ``run_dir``
    it is for the system's slapd: pid and args files there (Debian's init script needs the pid
    file) and cn=config left to root over ldapi://, as Debian's own configuration has it."""
    return _render(
        "slapd.conf.j2",
        schemas=[SCHEMA_DIR / f"{name}.schema" for name in SCHEMAS],
        module_dir=LDAP_MODULE_DIR,
        mdb_maxsize=_MDB_MAXSIZE,
        run_dir=run_dir is not None,
        pid_file=run_dir / "slapd.pid" if run_dir else None,
        args_file=run_dir / "slapd.args" if run_dir else None,
        base_dn=d.base_dn,
        admin_dn=d.admin_dn,
        rootpw_hash=rootpw_hash,
        ldap_data=data_dir,
        reader_dn=d.reader_dn,
    )


@dataclass(frozen=True)
class DovecotIdentity:
    """Whom Dovecot runs as: as root it switches users; otherwise everything is the caller."""

    as_root: bool
    mail_uid: int
    mail_gid: int
    internal_user: str
    internal_group: str
    internal_gid: int

    @classmethod
    def current(cls) -> DovecotIdentity:
        if os.geteuid() == 0:
            try:
                mail = pwd.getpwnam("mail")
                internal = pwd.getpwnam("dovecot")
            except KeyError as exc:
                raise StackError(
                    f"the system users 'mail' and 'dovecot' are needed ({exc}); "
                    f"install Dovecot with: {INSTALL_COMMAND}"
                ) from None
            return cls(
                as_root=True,
                mail_uid=mail.pw_uid,
                mail_gid=mail.pw_gid,
                internal_user=internal.pw_name,
                internal_group=grp.getgrgid(internal.pw_gid).gr_name,
                internal_gid=internal.pw_gid,
            )
        me = pwd.getpwuid(os.geteuid())
        return cls(
            as_root=False,
            mail_uid=me.pw_uid,
            mail_gid=me.pw_gid,
            internal_user=me.pw_name,
            internal_group=grp.getgrgid(os.getegid()).gr_name,
            internal_gid=os.getegid(),
        )


@dataclass(frozen=True)
class MailsvcDovecot:
    """What templates/stack/dovecot-mailsvc.conf.j2 (mailsvc's part of Dovecot's settings) is
    rendered with: by the local stack, and by `mailsvc init` for the system's Dovecot."""

    imap_port: int
    imaps_port: int
    lmtp_host: str
    lmtp_port: int
    mail_root: Path
    master_users: Path
    ldap_conf: Path
    # Every address of the listeners (Dovecot's "listen"); None: Dovecot's default, all.
    listen: str | None = None
    # PEM certificate and key: IMAP then requires TLS. None: no TLS at all (loopback only).
    tls: tuple[str, str] | None = None
    # With tls: False offers TLS (IMAPS, STARTTLS) but still takes clear-text logins (the local
    # stack on loopback, where tests log in both ways).
    tls_required: bool = True
    # Whom mail is kept as (mail_uid and mail_gid: user and group); None: whoever runs Dovecot.
    mail_owner: tuple[str, str] | None = None
    # The lowest uid and gid a mailbox may belong to; None: Dovecot's default (500, 1).
    first_valid: tuple[int, int] | None = None


def dovecot_conf(paths: Paths, who: DovecotIdentity, include: Path) -> str:
    """The local stack's dovecot.conf: the server's own settings for ``paths`` (sockets, state,
    log, users), then ``include``, mailsvc's part (paths.dovecot_mailsvc_conf)."""
    return _render(
        "dovecot.conf.j2",
        instance=var_dir_digest(paths.var_dir),
        base_dir=paths.dovecot_base,
        state_dir=paths.dovecot_state,
        log=paths.log("dovecot"),
        as_root=who.as_root,
        internal_user=who.internal_user,
        internal_group=who.internal_group,
        mailsvc_conf=include,
    )


def dovecot_mailsvc_conf(settings: Settings, paths: Paths, who: DovecotIdentity) -> str:
    """The local stack's part of mailsvc in Dovecot: plain IMAP and LMTP on stack.host."""
    stack = settings.stack
    return render_dovecot_mailsvc(
        MailsvcDovecot(
            listen=stack.host,
            imap_port=stack.imap_port,
            # stack.imaps_port: IMAPS there and STARTTLS on the imap port, self-signed.
            imaps_port=stack.imaps_port,
            tls=(str(paths.dovecot_tls_cert), str(paths.dovecot_tls_key))
            if stack.imaps_port
            else None,
            tls_required=False,
            lmtp_host=stack.host,
            lmtp_port=stack.lmtp_port,
            mail_root=paths.mail_root,
            master_users=paths.master_users,
            ldap_conf=paths.dovecot_ldap_conf,
            # Dovecot will not keep mail as root: as root it delivers as the system user "mail".
            mail_owner=("mail", "mail") if who.as_root else None,
            first_valid=(who.mail_uid, who.mail_gid),
        )
    )


def render_dovecot_mailsvc(values: MailsvcDovecot) -> str:
    cert, key = values.tls or ("", "")
    mail_uid, mail_gid = values.mail_owner or (None, None)
    first_uid, first_gid = values.first_valid or (None, None)
    return _render(
        "dovecot-mailsvc.conf.j2",
        listen=values.listen,
        tls_cert=cert,
        tls_key=key,
        tls_required=values.tls_required,
        master_separator=mailstore.MASTER_SEPARATOR,
        master_user=mailstore.MASTER_USER,
        mail_uid=mail_uid,
        mail_gid=mail_gid,
        first_valid_uid=first_uid,
        first_valid_gid=first_gid,
        mail_root=values.mail_root,
        imap_port=values.imap_port,
        imaps_port=values.imaps_port,
        lmtp_host=values.lmtp_host,
        lmtp_port=values.lmtp_port,
        master_users=values.master_users,
        ldap_conf=values.ldap_conf,
    )


def dovecot_ldap_conf(
    settings: Settings, paths: Paths, who: DovecotIdentity, reader_password: str
) -> str:
    return render_dovecot_ldap_conf(
        settings,
        reader_password,
        mail_owner=(str(who.mail_uid), str(who.mail_gid)),
        mail_root=paths.mail_root,
    )


def render_dovecot_ldap_conf(
    settings: Settings, reader_password: str, *, mail_owner: tuple[str, str], mail_root: Path
) -> str:
    """Dovecot's LDAP passdb and userdb: ``mail_owner`` is the user and group (names or
    numbers) that the mailboxes under ``mail_root`` belong to."""
    d = settings.ldap
    url = settings.ldap_url
    return _render(
        "dovecot-ldap.conf.ext.j2",
        ldap_url=url,
        # TLS settings only where the directory is reached over TLS: the embedded default's
        # loopback slapd is plain ldap://.
        tls=d.starttls or url.lower().startswith("ldaps://"),
        starttls=d.starttls,
        # Dovecot's auth process does not run in our working directory.
        ca_file=os.path.abspath(d.ca_file) if d.ca_file else "",
        reader_dn=d.reader_dn,
        reader_password=reader_password,
        councillors_dn=d.councillors_dn,
        person_object_class=d.person_object_class,
        mail_attribute=d.mail_attribute,
        status_attribute=d.status_attribute,
        disabled_value=d.disabled_value,
        active_directory=d.kind == "ad",
        mail_uid=mail_owner[0],
        mail_gid=mail_owner[1],
        mail_root=mail_root,
    )


def smb_conf(settings: Settings, paths: Paths) -> str:
    ad = settings.samba_directory
    return _render(
        "smb.conf.j2",
        dc_name=ad.dc_name,
        netbios_domain=ad.netbios_domain,
        realm=ad.realm,
        realm_lower=ad.realm.lower(),
        host=settings.stack.samba_host,
        tls_key=paths.samba_tls_key,
        tls_cert=paths.samba_tls_cert,
        samba_dir=paths.samba_dir,
        log=paths.log("samba"),
    )


def master_users(secret_hash: str) -> str:
    """Dovecot's passwd-file of master users: the one the service reads mailboxes as."""
    user = _word(mailstore.MASTER_USER, _PASSWD_FIELD_UNSAFE, _GENERATED)
    return f"{user}:{_word(secret_hash, _PASSWD_FIELD_UNSAFE, _GENERATED)}\n"


# -- rendering -------------------------------------------------------------------------------


class Escaped(str):
    """Text a filter made safe for where it is printed: the only text a template may print."""


def _only_escaped(value: object) -> object:
    if isinstance(value, Escaped) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"a stack template printed {type(value).__name__} without an escaping filter")


@functools.lru_cache(maxsize=4)
def environment(directory: Path) -> jinja2.Environment:
    """The Environment for the stack templates in ``directory``: plain text, no HTML escaping,
    and nothing printed that did not pass one of the filters below."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory, encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - not HTML: the filters escape for each file's syntax
        finalize=_only_escaped,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        slapd_quote=slapd_quote,
        slapd_word=slapd_word,
        dovecot_quote=dovecot_quote,
        dovecot_word=dovecot_word,
        dovecot_path=dovecot_path,
        ldap_filter_value=ldap_filter_value,
        ldap_attribute=ldap_attribute,
        samba_value=samba_value,
    )
    return env


def render_template(name: str, **context: object) -> str:
    """templates/stack/``name`` with ``context`` (values already escaped, or ints)."""
    return _render(name, **context)


def _render(name: str, **context: object) -> str:
    # TEMPLATES_DIR is read at call time, as templating.render does.
    return environment(templating.TEMPLATES_DIR / "stack").get_template(name).render(context)


# -- filters ---------------------------------------------------------------------------------


def slapd_quote(value: str | os.PathLike[str], setting: str = _GENERATED) -> Escaped:
    """A double-quoted slapd.conf argument. slapd reads the file line by line before it
    unquotes, so no quoting can carry a line break: refuse control characters."""
    text = _text(value)
    if _CONTROL.search(text):
        raise StackError(f"{setting}: slapd.conf cannot hold line breaks or control characters")
    return Escaped('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def slapd_word(value: str, setting: str = _GENERATED) -> Escaped:
    """An unquoted slapd.conf argument, such as a password hash: one token as it is."""
    return _word(_text(value), _SLAPD_WORD_UNSAFE, setting)


def dovecot_quote(value: str | os.PathLike[str], setting: str = _GENERATED) -> Escaped:
    """A double-quoted Dovecot value; Dovecot too reads line by line, then unescapes."""
    text = _text(value)
    if _CONTROL.search(text):
        raise StackError(
            f"{setting}: Dovecot's files cannot hold line breaks or control characters"
        )
    return Escaped('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def dovecot_word(value: str, setting: str = _GENERATED) -> Escaped:
    """An unquoted Dovecot value (host, URL, user name) that needs no quoting, as it is."""
    return _word(_text(value), _DOVECOT_WORD_UNSAFE, setting)


def dovecot_path(value: str | os.PathLike[str], setting: str = "var_dir") -> Escaped:
    """An unquoted path in Dovecot's files, where it is also split at ':' and ',' and
    %-expanded: the characters var_dir is checked against are refused."""
    return _word(_text(value), UNSAFE_PATH, setting)


def ldap_filter_value(value: str) -> Escaped:
    """A constant in an LDAP filter (RFC 4515) inside Dovecot's %-expanded filter template.

    Beyond RFC 4515's ``*()\\`` and NUL, control characters and the characters Dovecot's line
    parser looks at in an unquoted value (quotes, ``#``) are written as ``\\XX`` too: in a
    filter they mean the same, and the line stays one line with nothing that starts a comment.
    """
    out = []
    for ch in _text(value):
        if ch in "*()\\\"'#" or _CONTROL.match(ch):
            out.append(f"\\{ord(ch):02x}")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return Escaped("".join(out))


def ldap_attribute(value: str, setting: str = _GENERATED) -> Escaped:
    """An attribute name (or OID) in an LDAP filter or attribute map: nothing to escape."""
    if not _LDAP_ATTRIBUTE.fullmatch(_text(value)):
        raise StackError(f"{setting} = {value!r}: expected an LDAP attribute name such as mail")
    return Escaped(value)


def samba_value(value: str | os.PathLike[str], setting: str = _GENERATED) -> Escaped:
    """A value in smb.conf, which runs to the end of the line unquoted; a backslash there
    would continue the line and a % would be expanded (%m, %U...)."""
    return _word(_text(value), _SAMBA_UNSAFE, setting)


def _text(value: str | os.PathLike[str]) -> str:
    if isinstance(value, jinja2.Undefined):
        str(value)  # a StrictUndefined raises UndefinedError naming the missing variable
    return os.fspath(value)


def _word(value: str, unsafe: re.Pattern[str], setting: str) -> Escaped:
    if not value or unsafe.search(value):
        raise StackError(
            f"{setting}: the local stack's configuration files cannot hold this value unquoted; "
            "it must not be empty or contain spaces, quotes, backslashes or punctuation "
            "such as # $ % { } , ; ="
        )
    return Escaped(value)
