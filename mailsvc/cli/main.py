"""`mailsvc …` commands. Thin: parse arguments, call a use case, print the result."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import smtplib
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from mailsvc import i18n, logs, resources, secret_store
from mailsvc.app import cli_command_line, open_directory, open_parts, start_service
from mailsvc.cli import backup as cli_backup
from mailsvc.cli import check as cli_check
from mailsvc.cli import clerks as cli_clerks
from mailsvc.cli import cluster as cli_cluster
from mailsvc.cli import councillors as cli_councillors
from mailsvc.cli import db as cli_db
from mailsvc.cli import dns as cli_dns
from mailsvc.cli import evidence as cli_evidence
from mailsvc.cli import init as cli_init
from mailsvc.cli import queue as cli_queue
from mailsvc.cli import sessions as cli_sessions
from mailsvc.cli import web as cli_web
from mailsvc.cli.check import run_checks as run_checks  # its home before cli/check.py
from mailsvc.config import Settings, load_settings
from mailsvc.errors import ConfigError, MailsvcError
from mailsvc.storage.register import os_audit_context
from provisioning.errors import ProvisioningError

log = logging.getLogger("mailsvc")

EPILOG = textwrap.dedent(
    """\
    examples:
      mailsvc stack up                      start local slapd (or Samba AD) + Dovecot under var/
      mailsvc councillors add --given-name Łukasz --surname Żółć
      mailsvc clerks add --given-name Anna --surname Nowak   a clerk for the web panel
      mailsvc serve                         run the SMTP relay and delivery (Ctrl-C stops)
      mailsvc check                         check config, directory, mailbox store, database
    """
)


def _print(settings: Settings, key: str, **values: Any) -> None:
    print(i18n.text(settings.language, key, **values))


# -- stack -----------------------------------------------------------------------------------


def _stack(settings: Settings) -> Any:
    from mailsvc.stack import LocalStack

    return LocalStack(settings)


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    stack = _stack(settings)
    if args.action == "up":
        started = time.monotonic()
        statuses = stack.up()
        _print(settings, "stack.up")
        for st in statuses:
            print(f"  {st.name:8} pid {st.pid}  {st.port_info}")
        print(f"  ({time.monotonic() - started:.2f} s)")
        _print_samba(settings)
    elif args.action == "down":
        names = stack.down()
        if names:
            _print(settings, "stack.down", names=", ".join(names))
        else:
            _print(settings, "stack.down.none")
    else:
        running = True
        for st in stack.status():
            state = i18n.text(
                settings.language, "status.running" if st.running else "status.stopped"
            )
            print(f"{st.name:8} {state:10} pid {st.pid or '-':>7}  {st.port_info}")
            running = running and st.running
        _print_samba(settings)
        return 0 if running else 3
    return 0


def _print_samba(settings: Settings) -> None:
    """What the service will need to reach the stack's Samba AD DC (stack.directory)."""
    if settings.stack.directory != "samba":
        return
    ad = settings.samba_directory
    d = settings.ldap
    # Where the passwords are, never the passwords themselves.
    where = service = "directory.admin_password"
    if not settings.directory.admin_password:
        where = str(secret_store.secret_path(settings, "samba-admin"))
        service = str(secret_store.secret_path(settings, "ldap-admin"))
    units = ", ".join(rdn for rdn in (d.councillors_rdn, d.groups_rdn, d.staff_rdn))
    _print(
        settings,
        "stack.samba",
        url=ad.url,
        base_dn=d.base_dn,
        service_dn=d.admin_dn,
        units=units,
        service_password=service,
        principal=ad.admin_principal,
        password=where,
        ca_file=d.ca_file,
    )


# -- serve / check ---------------------------------------------------------------------------


async def serve(settings: Settings, ready: Callable[[int], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully; SIGHUP reads the TLS certificate
    files again (``systemctl reload``, a certbot deploy hook) without dropping connections."""
    stop = asyncio.Event()
    hup = asyncio.Event()  # also set by a SIGHUP during the start: handled once started
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    service = await start_service(settings)

    async def reload_on_hup() -> None:
        while True:
            await hup.wait()
            hup.clear()
            await service.reload_tls()

    reloader = asyncio.create_task(reload_on_hup(), name="tls-reload")
    try:
        if ready:
            ready(service.smtp_port)
        await stop.wait()
    finally:
        reloader.cancel()
        await service.stop()


def _configure_logging(verbose: bool = False, log_format: str = "text") -> None:
    logs.configure(log_format, logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # aiosmtpd logs every command line at INFO: costly at load, and our own log already has
    # one line per accepted message and per delivery.
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose else logging.WARNING)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    _configure_logging(args.verbose, settings.logging.format)

    def ready(port: int) -> None:
        _print(settings, "serve.ready", host=settings.smtp.host, port=port)
        sys.stdout.flush()

    from mailsvc import eventloop

    logging.getLogger(__name__).info("event loop: %s", eventloop.choice())
    eventloop.run(serve(settings, ready))
    return 0


# -- relay statistics ------------------------------------------------------------------------


async def _relay_stats(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime

    from mailsvc.app import open_parts

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise MailsvcError(f"--since {args.since!r}: expected a date as YYYY-MM-DD") from None
    async with open_parts(settings) as parts:
        stats = await parts.relay_log.stats(since)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "councillor": st.recipient,
                        "received": st.received,
                        "replied": st.replied,
                        "median_reply_seconds": st.median_reply_seconds,
                    }
                    for st in stats
                ]
            )
        )
        return 0
    print(i18n.text(settings.language, "relay.stats.header"))
    for st in stats:
        median = "—" if st.median_reply_seconds is None else _duration(st.median_reply_seconds)
        print(f"{st.recipient:<42} {st.received:>8} {st.replied:>8} {median:>12}")
    return 0


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def cmd_relay(settings: Settings, args: argparse.Namespace) -> int:
    result: int = asyncio.run(_relay_stats(settings, args))
    return result


# -- trying it out ---------------------------------------------------------------------------


def cmd_sendmail(settings: Settings, args: argparse.Namespace) -> int:
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = args.subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="mailsvc.local")
    msg.set_content(args.body)
    with smtplib.SMTP(settings.smtp.host, settings.smtp.port, timeout=30) as smtp:
        smtp.ehlo("mailsvc-cli")
        refused = smtp.send_message(msg, from_addr=args.sender, to_addrs=[args.to])
        reply = "250 OK" if not refused else str(refused)
    _print(settings, "sendmail.sent", reply=reply)
    return 0


async def _mailbox(settings: Settings, args: argparse.Namespace) -> int:
    from email import message_from_bytes
    from email.header import decode_header, make_header

    from mailsvc.mailbox import ImapServer, read_inbox

    # The councillors' IMAP server (clients.*), with its TLS: the embedded stack by default.
    server = ImapServer.from_settings(settings)
    headers = await read_inbox(
        server.host,
        server.port,
        args.user,
        args.password,
        headers_only=True,
        ssl_context=server.ssl_context(),
        starttls=server.starttls,
    )
    if not headers:
        _print(settings, "mailbox.empty")
    for num, raw in enumerate(headers, 1):
        msg = message_from_bytes(raw)
        subject = str(make_header(decode_header(msg.get("Subject", ""))))
        sender = str(make_header(decode_header(msg.get("From", ""))))
        print(f"{num}: {msg.get('Date', '')} | {sender} | {subject}")
    return 0


def cmd_mailbox(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_mailbox(settings, args))


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """make run: stack up, sample council, hints, serve; Ctrl-C stops what this started."""
    from mailsvc.stack import LocalStack

    stack = LocalStack(settings)
    was_running = all(st.running for st in stack.status())
    started = time.monotonic()
    stack.up()
    print(f"stack ready in {time.monotonic() - started:.2f} s")
    try:
        asyncio.run(_import_sample(settings, Path(args.roster)))
        login, password = asyncio.run(_demo_login(settings))
        panel = asyncio.run(_sample_clerk(settings)) if settings.web.enabled else ""
        send = f"{sys.argv[0]} sendmail --to {login} --subject 'Dziura w jezdni na ul. Długiej'"
        read = f"{sys.argv[0]} mailbox --user {login} --password {password}"
        capture = f"{sys.argv[0]} capture list"
        _print(
            settings,
            "run.try",
            send=send,
            read=read,
            capture=capture,
            login=login,
            password=password,
            imap_host=settings.stack.host,
            imap_port=settings.stack.imap_port,
            panel=panel,
        )
        sys.stdout.flush()
        return cmd_serve(settings, args)
    finally:
        if not was_running:
            stack.down()


async def _import_sample(settings: Settings, roster: Path) -> None:
    from mailsvc.app import open_parts
    from mailsvc.cli.councillors import run_import

    async with open_parts(settings) as parts:
        _, result, _, _ = await run_import(parts, roster, quiet=True)
        assert result is not None
        if result.created:
            await parts.deliver_queued()
    print(
        i18n.text(
            settings.language,
            "import.done",
            created=len(result.created),
            updated=len(result.updated),
            disabled=len(result.disabled),
            unchanged=result.unchanged,
            errors=len(result.errors),
        )
    )


async def _demo_login(settings: Settings) -> tuple[str, str]:
    """A fresh password for the first sample councillor, so the demo login is known."""
    from mailsvc.passwords import set_new_password
    from provisioning.passwords import generate_password

    directory = open_directory(settings)
    try:
        entries = sorted(
            (e for e in await directory.list_councillors() if e.active), key=lambda e: e.address
        )
        if not entries:
            raise MailsvcError("no councillors in the directory")
        first = next((e for e in entries if e.address.startswith("lukasz.zolc@")), entries[0])
        password = generate_password()
        await set_new_password(settings, directory, first.dn, password)
        return first.address, password
    finally:
        await directory.close()


SAMPLE_CLERK = ("sekretariat", "Sekretariat Rady")


async def _sample_clerk(settings: Settings) -> str:
    """The panel's address and a clerk's login for ``make run``: a sample clerk is made when
    nobody can sign in yet, and only then is its password shown (on the console, never logged).
    """
    login, name = SAMPLE_CLERK
    url = f"{settings.web_url}/"
    reset = f"{sys.argv[0]} clerks reset-password"
    async with open_parts(settings) as parts:
        clerks = parts.clerks()
        made = await clerks.ensure_sample(login, name, os_audit_context(cli_command_line()))
        if made is not None:
            return i18n.text(
                settings.language,
                "run.panel.created",
                url=url,
                login=made.login,
                password=made.password,
                reset=f"{reset} {made.login}",
            )
        usable = [c for c in await clerks.listing() if c.in_group and c.active]
    if not usable:
        add = f'{sys.argv[0]} clerks add {login} --name "{name}"'
        return i18n.text(settings.language, "run.panel.none", url=url, add=add)
    shown = next((c for c in usable if c.login == login), usable[0])
    if shown.kind != "staff":  # a councillor in the clerks group
        reset = f"{sys.argv[0]} councillors reset-password"
    return i18n.text(
        settings.language,
        "run.panel.known",
        url=url,
        login=shown.login,
        reset=f"{reset} {shown.login}",
    )


# -- argument parsing ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailsvc",
        description="Mail system of the city council.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help="configuration file (default: MAILSVC_CONFIG or the embedded default)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "stack",
        help="start, stop or show the local slapd + Dovecot",
        epilog="example: mailsvc stack up",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    cli_councillors.add_parser(sub)
    cli_clerks.add_parser(sub)
    cli_queue.add_parser(sub)
    cli_sessions.add_parser(sub)
    cli_evidence.add_parser(sub)
    cli_web.add_parser(sub)
    cli_dns.add_parser(sub)
    cli_init.add_parser(sub)
    cli_backup.add_parser(sub)
    cli_db.add_parser(sub)
    cli_cluster.add_parser(sub)

    p = sub.add_parser("relay", help="residents' mail: statistics (aggregates only)")
    rsub = p.add_subparsers(dest="action", required=True)
    r = rsub.add_parser(
        "stats",
        help="per councillor: messages received and median reply time",
        epilog="example: mailsvc relay stats --since 2026-01-01",
    )
    r.add_argument("--since", help="YYYY-MM-DD (default: everything kept)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_relay)

    p = sub.add_parser(
        "serve",
        help="run the SMTP relay and delivery in the foreground",
        epilog="example: mailsvc serve",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_serve)

    cli_check.add_parser(sub)

    p = sub.add_parser(
        "sendmail",
        help="send a test message to the relay",
        epilog="example: mailsvc sendmail --to lukasz.zolc@rada.miasto.example",
    )
    p.add_argument("--to", required=True)
    p.add_argument("--from", dest="sender", default="mieszkaniec@example.org")
    p.add_argument("--subject", default="Wiadomość od mieszkańca")
    p.add_argument("--body", default="Dzień dobry,\nproszę o interwencję.\n\nZ poważaniem\n")
    p.set_defaults(func=cmd_sendmail)

    p = sub.add_parser(
        "mailbox",
        help="list a mailbox over IMAP (read-only)",
        epilog="example: mailsvc mailbox --user lukasz.zolc@rada.miasto.example --password …",
    )
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.set_defaults(func=cmd_mailbox)

    p = sub.add_parser(
        "run",
        help="make run: stack up, sample council, then serve",
        epilog="example: mailsvc run --roster config/sample-roster.csv",
    )
    p.add_argument(
        "--roster",
        default=str(resources.config_dir() / "sample-roster.csv"),
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"mailsvc: config error: {exc}", file=sys.stderr)
        return 2
    try:
        result: int = args.func(settings, args)
        return result
    except KeyboardInterrupt:
        return 130
    except (MailsvcError, ProvisioningError) as exc:
        print(f"mailsvc: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
