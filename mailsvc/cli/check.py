"""`mailsvc check`: is everything the service needs there and healthy?

One line per check, exit status 1 when any fails:

- config, directory, mailstore (LMTP), database: reachable;
- tls-cert: ``smtp.tls_cert`` is readable and valid for at least ``--cert-days`` more days
  (fine when not configured: the line says so);
- dns: the published records against what `mailsvc dns` prints, through ``smtp.dns_resolver``
  when set; a lookup without an answer is a failure, never a crash; ``--no-dns`` skips it, and
  so does a domain that cannot be in public DNS (``rada.miasto.example``) without a resolver;
- disk: at least ``--min-free-mb`` free where var_dir is;
- scheduler: every scheduled job succeeded within three of its intervals (plus a minute); a
  database where no job ever ran (the service has not run yet) is not judged;
- scheduler-leader: the node that leads the scheduler (PostgreSQL: the holder of the advisory
  lock, by its connection's application_name), or "sole node (SQLite)"; nobody leading is a
  failure once jobs have run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc import i18n
from mailsvc.app import open_directory
from mailsvc.cli.dns import dns_plan
from mailsvc.config import Settings
from mailsvc.errors import MailsvcError
from mailsvc.jobs import JobSpec, job_specs
from mailsvc.relay import dnscheck
from mailsvc.storage.db import create_engine
from mailsvc.storage.jobruns import JobRun, JobRuns
from provisioning.errors import ProvisioningError

Result = tuple[str, bool, str]

CERT_MIN_DAYS = 14
MIN_FREE_MB = 1024
# A job is late after this many of its intervals, plus STALE_GRACE seconds.
STALE_INTERVALS = 3
STALE_GRACE = 60.0
# Seconds the DNS lookups may take in all.
DNS_LIFETIME = 5.0


def _t(settings: Settings, key: str, **values: Any) -> str:
    return i18n.text(settings.language, key, **values)


async def _directory(settings: Settings) -> list[Result]:
    """Reachable; and with Active Directory, the service account's delegated rights."""
    directory = open_directory(settings)
    try:
        await directory.ping()
        results: list[Result] = [("directory", True, settings.ldap_url)]
        if directory.dialect.kind == "ad":
            missing = await directory.missing_rights()
            account = settings.ldap.admin_dn
            detail = (
                f"{account} lacks rights the service needs: " + "; ".join(missing)
                if missing
                else f"{account} may create, change and remove councillors, staff and groups"
            )
            results.append(("directory-rights", not missing, detail))
        return results
    except (ProvisioningError, MailsvcError) as exc:
        return [("directory", False, str(exc))]
    finally:
        await directory.close()


async def _mailstore(settings: Settings) -> Result:
    from mailsvc.relay.delivery.lmtp import LmtpClient

    host, port = settings.lmtp_address
    client = LmtpClient(host, port, timeout=5)
    try:
        await client.connect()
        return "mailstore", True, f"lmtp {host}:{port}"
    except MailsvcError as exc:
        return "mailstore", False, str(exc)
    finally:
        await client.close()


def _database_label(url: str) -> str:
    """The engine, and for a server where it is (never the password):
    "postgresql+asyncpg 127.0.0.1:5433/mailsvc"."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.host:  # SQLite, or a server through its Unix socket
        return parsed.drivername
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.drivername} {parsed.host}{port}/{parsed.database}"


async def _database(settings: Settings) -> tuple[Result, AsyncEngine | None]:
    """Reachable, and its schema at this version's revision (or empty: made at the first
    start). Nothing is created or changed. The engine is returned when the schema is current."""
    from mailsvc.storage import schema

    backend = _database_label(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        found = await schema.state(engine)
    except Exception as exc:  # any driver error is a failed check, reported as such
        await engine.dispose()
        return ("database", False, f"{type(exc).__name__}: {exc}"), None
    if found.status is schema.Status.CURRENT:
        return ("database", True, f"{backend}, schema {found.current}"), engine
    await engine.dispose()
    if found.status is schema.Status.EMPTY:
        detail = f"{backend}, empty: the first start makes schema {found.head}"
        return ("database", True, detail), None
    return ("database", False, schema.refusal(found)), None


def _cert_path(settings: Settings) -> Path | None:
    cert = settings.smtp.tls_cert
    if not cert:
        return None
    return settings.var_dir / "tls" / "smtp-cert.pem" if cert == "auto" else Path(cert)


async def certificate(settings: Settings, min_days: int, now: dt.datetime) -> Result:
    """``smtp.tls_cert``'s expiry (the first certificate of the file: the server's own)."""
    path = _cert_path(settings)
    if path is None:
        return "tls-cert", True, _t(settings, "check.cert.none")
    if settings.smtp.tls_cert == "auto" and not path.exists():
        return "tls-cert", True, _t(settings, "check.cert.auto_later", path=path)
    try:
        cert = x509.load_pem_x509_certificate(await asyncio.to_thread(path.read_bytes))
    except (OSError, ValueError) as exc:
        return "tls-cert", False, _t(settings, "check.cert.unreadable", path=path, error=exc)
    until = cert.not_valid_after_utc
    days = (until - now).days
    values = {"path": path, "until": f"{until:%Y-%m-%d %H:%M} UTC", "days": days}
    if until <= now:
        return "tls-cert", False, _t(settings, "check.cert.expired", **values)
    if days < min_days:
        return "tls-cert", False, _t(settings, "check.cert.expiring", minimum=min_days, **values)
    return "tls-cert", True, _t(settings, "check.cert.valid", **values)


async def published_dns(settings: Settings, *, lifetime: float = DNS_LIFETIME) -> list[Result]:
    """One line per expected record, or one line when the resolver gave no answer at all
    (within ``lifetime`` seconds: the lookups run at once)."""
    resolver_spec = settings.smtp.dns_resolver
    if not resolver_spec and dnscheck.reserved(settings.domain):
        return [("dns", True, _t(settings, "check.dns.skipped", domain=settings.domain))]
    where = resolver_spec or "/etc/resolv.conf"
    try:
        resolver = dnscheck.resolver_for(resolver_spec, lifetime=lifetime)
    except (ValueError, OSError) as exc:  # e.g. a resolver named, not given as an address
        return [("dns", False, _t(settings, "check.dns.no_answer", resolver=where, error=exc))]
    plan = await dns_plan(settings)
    checks = await dnscheck.check_records(plan.records, resolver)
    if checks and all(c.status == dnscheck.UNKNOWN for c in checks):
        error = checks[0].found
        return [("dns", False, _t(settings, "check.dns.no_answer", resolver=where, error=error))]
    out = []
    for c in checks:
        r = c.record
        detail = _t(
            settings,
            f"check.dns.{c.status}",
            type=r.type,
            name=r.name,
            expected=r.rdata(),
            found=c.found,
        )
        out.append(("dns", c.status == dnscheck.OK, detail))
    return out


def _size(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


async def disk(settings: Settings, min_free_mb: int) -> Result:
    path = settings.var_dir
    while not path.exists() and path != path.parent:  # before the first start
        path = path.parent
    usage = await asyncio.to_thread(shutil.disk_usage, path)
    free, total = usage.free / 2**20, usage.total / 2**20
    detail = _t(
        settings,
        "check.disk",
        path=settings.var_dir,
        free=_size(free),
        total=_size(total),
        percent=round(100 * usage.free / usage.total) if usage.total else 0,
        minimum=_size(min_free_mb),
    )
    return "disk", free >= min_free_mb, detail


def _ago(seconds: float) -> str:
    """A duration in its largest whole unit ("2 h", "5 min"; seconds to a tenth)."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{round(max(0.0, seconds), 1):g} s"


def _job_problem(settings: Settings, spec: JobSpec, run: JobRun | None, now: dt.datetime) -> str:
    """What is wrong with one job ("" when nothing): no success yet, or none for too long;
    with its last error when that came after its last success."""
    if run is None or run.last_success_at is None:
        text = _t(settings, "check.scheduler.not_run", job=spec.id)
    else:
        age = (now - run.last_success_at).total_seconds()
        if age <= STALE_INTERVALS * spec.seconds + STALE_GRACE:
            return ""
        text = _t(
            settings,
            "check.scheduler.stale",
            job=spec.id,
            ago=_ago(age),
            interval=_ago(spec.seconds),
        )
    if run is not None and run.last_error and run.last_failure_at is not None:
        if run.last_success_at is None or run.last_failure_at > run.last_success_at:
            text += ", " + _t(settings, "check.scheduler.error", error=run.last_error)
    return text


async def scheduler(
    settings: Settings, engine: AsyncEngine | None, now: dt.datetime, *, database_ok: bool = False
) -> Result:
    """Every scheduled job's last success against its interval (``mailsvc.jobs.job_specs``)."""
    if engine is None:
        if database_ok:  # empty: no job can have run
            return "scheduler", True, _t(settings, "check.scheduler.never")
        return "scheduler", False, "database unavailable"
    runs = await JobRuns(engine).all()
    if not runs:
        return "scheduler", True, _t(settings, "check.scheduler.never")
    specs = job_specs(settings.provisioning.lifecycle_interval, distribution=settings.distribution)
    naive_now = now.astimezone(dt.UTC).replace(tzinfo=None)
    problems = [p for s in specs if (p := _job_problem(settings, s, runs.get(s.id), naive_now))]
    if problems:
        return "scheduler", False, "; ".join(problems)
    latest = max(r.last_success_at for r in runs.values() if r.last_success_at is not None)
    ago = _ago((naive_now - latest).total_seconds())
    return "scheduler", True, _t(settings, "check.scheduler.ok", jobs=len(specs), ago=ago)


async def leader(
    settings: Settings, engine: AsyncEngine | None, *, database_ok: bool = False
) -> Result:
    """Which node leads the scheduler (mailsvc.storage.leader)."""
    from mailsvc.storage.leader import scheduler_leader

    if not settings.database_url.startswith("postgresql"):
        return "scheduler-leader", True, _t(settings, "check.leader.sole")
    if engine is None:
        if database_ok:  # empty: no service has used it yet
            return "scheduler-leader", True, _t(settings, "check.leader.none")
        return "scheduler-leader", False, "database unavailable"
    node = await scheduler_leader(engine)
    if node is not None:
        return "scheduler-leader", True, _t(settings, "check.leader.node", node=node)
    ran = bool(await JobRuns(engine).all())
    return "scheduler-leader", not ran, _t(settings, "check.leader.none")


async def run_checks(
    settings: Settings,
    *,
    dns: bool = True,
    cert_days: int = CERT_MIN_DAYS,
    min_free_mb: int = MIN_FREE_MB,
) -> list[Result]:
    """Every check as (name, ok, detail), in the order printed."""
    now = dt.datetime.now(dt.UTC)
    results: list[Result] = [
        ("config", True, str(settings.source) if settings.source else "built-in")
    ]
    results += await _directory(settings)
    results.append(await _mailstore(settings))
    database, engine = await _database(settings)
    results.append(database)
    try:
        results.append(await certificate(settings, cert_days, now))
        if dns:
            results += await published_dns(settings)
        else:
            results.append(("dns", True, _t(settings, "check.dns.off")))
        results.append(await disk(settings, min_free_mb))
        results.append(await scheduler(settings, engine, now, database_ok=database[1]))
        results.append(await leader(settings, engine, database_ok=database[1]))
    finally:
        if engine is not None:
            await engine.dispose()
    return results


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    results = asyncio.run(
        run_checks(
            settings, dns=not args.no_dns, cert_days=args.cert_days, min_free_mb=args.min_free_mb
        )
    )
    ok_word = _t(settings, "check.ok")
    fail_word = _t(settings, "check.fail")
    for name, ok, detail in results:
        print(f"{name:10} {ok_word if ok else fail_word:5} {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check config, directory, mailbox store, database, certificate, DNS, disk, jobs",
        epilog="example: mailsvc check --no-dns",
    )
    p.add_argument("--no-dns", action="store_true", help="do not look up the published DNS records")
    p.add_argument(
        "--cert-days",
        type=int,
        default=CERT_MIN_DAYS,
        help=f"fail when smtp.tls_cert expires within this many days (default {CERT_MIN_DAYS})",
    )
    p.add_argument(
        "--min-free-mb",
        type=int,
        default=MIN_FREE_MB,
        help=f"fail with less free space than this where var_dir is (default {MIN_FREE_MB})",
    )
    p.set_defaults(func=cmd_check)
