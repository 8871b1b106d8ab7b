"""`mailsvc init DIR --domain D --council-name N`: a production installation's files.

Writes ``DIR/mailsvc.toml`` (0600, from templates/production/mailsvc.toml.j2), makes var_dir
(``DIR/var``, 0700) with its private subdirectories, every secret the service would otherwise
make on first use, an RSA-2048 and an Ed25519 DKIM key, and the systemd unit
(``DIR/systemd/mailsvc.service``, from templates/systemd/), the configuration of the system's
slapd and Dovecot (``DIR/system/``, mailsvc/stack/system.py), then prints the next steps.
Secrets and keys that exist already are kept (``--force`` rewrites only the files made from them):
a published DKIM selector, the links in sent messages and Dovecot's master password all depend
on them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import jinja2

from mailsvc import resources, secret_store, templating
from mailsvc.cli.dns import default_selector_name
from mailsvc.config import DkimSelector, Settings, load_settings, validate
from mailsvc.distribution.links import RECEIPTS_KEY
from mailsvc.errors import ConfigError, MailsvcError
from mailsvc.mailstore import MASTER_SECRET_NAME
from mailsvc.relay.delivery.body import documents_dir
from mailsvc.relay.delivery.capture import capture_dir
from mailsvc.relay.dkim import keys as dkim_keys
from mailsvc.stack import system
from mailsvc.stack.errors import PACKAGES
from mailsvc.stack.layout import write_atomic
from mailsvc.storage.spool import spool_dir
from mailsvc.web.auth import SECRET_NAME as WEB_SECRET_NAME

CONFIG_NAME = "mailsvc.toml"
UNIT_NAMES = ("mailsvc.service",)
# Secret files and their lengths, as their users create them on first use.
SECRETS = ((RECEIPTS_KEY, 48), (WEB_SECRET_NAME, 48), (MASTER_SECRET_NAME, 32))
# What systemd reads as one plain path: no spaces, quotes, backslashes or % specifiers.
_UNIT_PATH = re.compile(r"^[A-Za-z0-9/._@+:-]+$")
# Directories that the unit's ProtectHome= and PrivateTmp= hide from the service.
_HIDDEN = tuple(map(Path, ("/home", "/root", "/run/user", "/tmp", "/var/tmp")))  # noqa: S108


@dataclass(frozen=True)
class ConfigValues:
    """What templates/production/mailsvc.toml.j2 is filled with."""

    domain: str
    hostname: str
    council_name: str
    var_dir: Path
    selectors: tuple[DkimSelector, ...]
    language: str = "pl"
    written_on: str = ""
    example: bool = False

    @property
    def base_dn(self) -> str:
        return ",".join(f"dc={label}" for label in self.domain.split("."))

    @property
    def office_address(self) -> str:
        return f"biuro@{self.domain}"


def example_values() -> ConfigValues:
    """The values of config/production.example.toml."""
    return ConfigValues(
        domain="rada.miasto.example",
        hostname="mail.rada.miasto.example",
        council_name="Rada Miasta Przykładowo",
        var_dir=Path("/srv/mailsvc/var"),
        selectors=(
            DkimSelector("rsa202701", dkim_keys.RSA),
            DkimSelector("ed202701", dkim_keys.ED25519),
        ),
        example=True,
    )


def _toml(value: object) -> str:
    """A TOML basic string (JSON's escapes are TOML's; TOML also refuses a raw DEL)."""
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise MailsvcError(f"{text!r}: control characters cannot be written to the config")
    return json.dumps(text, ensure_ascii=False)


def _unit_path(value: object) -> str:
    text = str(value)
    if not _UNIT_PATH.match(text):
        raise MailsvcError(
            f"{text}: a systemd unit cannot name this path (spaces, quotes, backslashes or % "
            "in it); choose a directory without them, such as /srv/mailsvc"
        )
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resources.templates_dir(), encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=(), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["toml"] = _toml
    env.filters["unit_path"] = _unit_path
    return env


def render_config(values: ConfigValues) -> str:
    template = _environment().get_template("production/mailsvc.toml.j2")
    return template.render(
        domain=values.domain,
        hostname=values.hostname,
        council_name=values.council_name,
        var_dir=values.var_dir,
        selectors=values.selectors,
        language=values.language,
        written_on=values.written_on,
        example=values.example,
        base_dn=values.base_dn,
        office_address=values.office_address,
    )


def render_units(command: Sequence[str], directory: Path) -> dict[str, str]:
    """The systemd units by file name, for an installation in ``directory`` run by
    ``command`` (mailsvc's script, or a Python with ``-m mailsvc.cli``)."""
    env = _environment()
    context = {
        "command": command,
        "dir": directory,
        "config": directory / CONFIG_NAME,
        "var_dir": directory / "var",
    }
    return {name: env.get_template(f"systemd/{name}.j2").render(**context) for name in UNIT_NAMES}


def mailsvc_command() -> list[str]:
    """How the unit runs this installation's mailsvc: the venv's script beside the Python that
    runs now, else that Python with ``-m mailsvc.cli``."""
    script = Path(sys.executable).with_name("mailsvc")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "mailsvc.cli"]


def _checked_domain(option: str, value: str) -> str:
    name = value.strip().rstrip(".").lower()
    try:
        validate(Settings(domain=name))
    except ConfigError:
        raise MailsvcError(
            f"{option} {value!r}: not a mail domain; expected a name such as rada.example.org"
        ) from None
    return name


def _check_target(directory: Path, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise MailsvcError(f"{directory} exists and is not a directory")
    if force or not directory.exists():
        return
    if (directory / CONFIG_NAME).exists():
        raise MailsvcError(f"{directory / CONFIG_NAME} exists already; --force writes it again")
    if any(directory.iterdir()):
        raise MailsvcError(f"{directory} is not empty; choose an empty directory or use --force")


def _make_layout(var_dir: Path) -> None:
    """var_dir and the directories the service keeps private (it would make them 0700 on
    first use; made now, their modes are there to see before the first start)."""
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (
        var_dir,
        var_dir / "secrets",
        spool_dir(var_dir),
        documents_dir(var_dir),
        capture_dir(var_dir),
        var_dir / "tls",
    ):
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)


def _make_secrets(settings: Settings) -> None:
    for name, length in SECRETS:
        secret_store.load_or_create_secret(settings, name, length)
    secret_store.admin_password(settings)
    secret_store.reader_password(settings)


def _dkim_selectors(settings: Settings) -> tuple[DkimSelector, ...]:
    """The keys already under var_dir/secrets (kept: their records may be published), or a new
    RSA-2048 and Ed25519 pair as `mailsvc dkim keygen` makes them."""
    found = []
    for path in sorted((settings.var_dir / "secrets").glob("dkim-*.pem")):
        name = path.name.removeprefix("dkim-").removesuffix(".pem")
        try:
            dkim_keys.read_key(path, dkim_keys.ED25519)
            found.append(DkimSelector(name, dkim_keys.ED25519))
        except ConfigError:
            dkim_keys.read_key(path, dkim_keys.RSA)  # neither kind: the error names the file
            found.append(DkimSelector(name, dkim_keys.RSA))
    if found:
        return tuple(found)
    made = []
    for algorithm in (dkim_keys.RSA, dkim_keys.ED25519):
        selector = DkimSelector(default_selector_name(algorithm), algorithm)
        dkim_keys.write_new_key(settings.dkim_key_file(selector), algorithm)
        made.append(selector)
    return tuple(made)


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    language = args.language or settings.language
    domain = _checked_domain("--domain", args.domain)
    hostname = _checked_domain("--hostname", args.hostname or f"mail.{domain}")
    council_name = args.council_name.strip()
    if not council_name:
        raise MailsvcError("--council-name: give the council's name")
    directory = Path(args.dir).absolute()
    _check_target(directory, args.force)
    command = mailsvc_command()
    units = render_units(command, directory)  # refuses a path systemd cannot name, early
    var_dir = directory / "var"

    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    _make_layout(var_dir)
    made = Settings(domain=domain, var_dir=var_dir)
    _make_secrets(made)
    values = ConfigValues(
        domain=domain,
        hostname=hostname,
        council_name=council_name,
        var_dir=var_dir,
        selectors=_dkim_selectors(made),
        language=language,
        written_on=date.today().isoformat(),
    )
    config = directory / CONFIG_NAME
    write_atomic(config, render_config(values), 0o600)
    written = load_settings(config, env={})  # what was written loads and passes the checks
    unit_dir = directory / "systemd"
    unit_dir.mkdir(mode=0o755, exist_ok=True)
    for name, text in units.items():
        write_atomic(unit_dir / name, text, 0o644)
    system.write(written, directory / system.SYSTEM_DIR)
    print(_next_steps(values, written, directory, command))
    return 0


def _next_steps(
    values: ConfigValues, settings: Settings, directory: Path, command: Sequence[str]
) -> str:
    config = directory / CONFIG_NAME
    mailsvc = " ".join([*command, "--config", str(config)])
    hidden = next((p for p in _HIDDEN if directory.is_relative_to(p)), None)
    files = directory / system.SYSTEM_DIR
    layout = system.SystemLayout()
    return templating.render(
        "production/next_steps.txt",
        values.language,
        dir=directory,
        config=config,
        var_dir=values.var_dir,
        secrets=values.var_dir / "secrets",
        keys=", ".join(f"{s.name} ({s.algorithm})" for s in values.selectors),
        units=[directory / "systemd" / name for name in UNIT_NAMES],
        hostname=values.hostname,
        reader_dn=settings.ldap.reader_dn,
        packages=PACKAGES,
        system_dir=files,
        slapd_conf=files / system.SLAPD_CONF,
        base_ldif=files / system.BASE_LDIF,
        dovecot_conf=files / system.DOVECOT_CONF,
        dovecot_private=[files / system.DOVECOT_LDAP_CONF, files / system.MASTER_USERS],
        ldap_data=layout.ldap_data,
        mail_root=layout.mail_root,
        mail_user=layout.mail_owner[0],
        ldap_url=settings.ldap_url,
        imaps_port=settings.clients.imap_port or 993,
        lmtp=":".join(map(str, settings.lmtp_address)),
        mailsvc=mailsvc,
        hidden=hidden,
    ).rstrip("\n")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "init",
        help="write a production configuration, secrets, DKIM keys and the systemd unit",
        epilog='example: mailsvc init /srv/mailsvc --domain rada.gmina.pl --council-name "Rada '
        'Gminy Przykładowo"',
    )
    p.add_argument("dir", metavar="DIR", help="the installation's directory (empty or new)")
    p.add_argument("--domain", required=True, help="the council's mail domain")
    p.add_argument("--council-name", required=True, help="shown in letters and messages")
    p.add_argument("--hostname", help="the mail server's name (default: mail.<domain>)")
    p.add_argument("--language", choices=["pl", "en"], help="of the service and of this output")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty DIR, over its config, unit and system/ files (secrets and "
        "keys are kept)",
    )
    p.set_defaults(func=cmd_init)
