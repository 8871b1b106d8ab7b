"""Backup benchmark: `mailsvc backup` and `mailsvc restore` of a 50,000-councillor council,
beside the plain tools doing the same job (slapcat, sqlite3 .backup, tar; tar, slapadd).

One run, one private slapd + Dovecot (mailsvc.stack.LocalStack, free loopback ports, temporary
var_dir under /tmp), filled the cheap way (setup, not timed):

- the directory: N councillors as bench/provision.py generates them (same names, addresses,
  roster attributes), the council group, committee and role groups, loaded with ldapadd. Their
  password hashes have the form and the size of the configured Argon2id ones but random salt and
  digest (hashing 50,000 for real takes the import ~17 minutes); a few councillors get a real
  hash of a known password, so the restored directory is checked with real binds;
- the database: the register row and the audit row the import writes for each councillor;
- the documents store: ``--documents-mb`` of session documents (incompressible, like PDFs);
- secrets as the stack makes them. No queue, no mailboxes (backed up without --mailboxes).

Then, timed, with slapd running:
1. mailsvc: ``create_backup`` (the code of `mailsvc backup FILE`), in this process;
2. mailsvc: ``restore_backup`` into a new empty var_dir, then the restored stack is started
   on other ports and checked (entries counted, real binds) - the start and the check are not
   part of the restore time;
3. peer: ``slapcat`` + ``sqlite3 DB ".backup FILE"`` + ``tar czf`` of the same parts, and back:
   ``tar xzf`` + ``slapadd -q`` into a new mdb database.

    .venv/bin/python bench/backup.py            # 50,000 councillors
    .venv/bin/python bench/backup.py --quick    # 2,000: a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3  # noqa: F401

from provision import (
    HEADER,
    StackSpec,
    fsync_probe,
    ldap_count,
    machine,
    make_council,
    password_file,
)
from sqlalchemy import insert

from mailsvc.app import open_database
from mailsvc.backup import create_backup, restore_backup
from mailsvc.backup.directory import ldif_record
from mailsvc.config import Settings
from mailsvc.passwords import argon2_params
from mailsvc.stack import LocalStack, free_ports
from mailsvc.stack.supervise import ldap_bind
from mailsvc.storage.tables import audit_log, councillors
from provisioning.naming import choose_local_part
from provisioning.passwords import hash_password
from provisioning.roster import parse_roster_text

DEFAULT_COUNT = 50_000
QUICK_COUNT = 2_000
REAL_PASSWORDS = 5
MB = 1024 * 1024


def _step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _fake_argon2(settings: Settings) -> str:
    """An {ARGON2} value of the configured parameters: random 16-byte salt and 32-byte digest,
    as argon2-cffi writes them (unpadded base64)."""
    p = argon2_params(settings)
    salt = base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    digest = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return (
        f"{{ARGON2}}$argon2id$v=19$m={p.memory_kib},t={p.time_cost},p={p.parallelism}"
        f"${salt}${digest}"
    )


def fill(settings: Settings, count: int, seed: int, work: Path) -> list[tuple[str, str]]:
    """Directory (ldapadd), register and audit rows; returns (dn, password) of the councillors
    that have a real hash."""
    council = make_council(count, seed)
    text = "\n".join(";".join(row) for row in [list(HEADER), *(p.row() for p in council.people)])
    parsed = parse_roster_text(text, committees=settings.committee_names)
    if parsed.problems:
        raise SystemExit(f"generated roster has problems, e.g. {parsed.problems[0]}")
    d = settings.directory
    reserved = set(settings.committee_names) | {f"komisja-{s}" for s in settings.committee_names}
    taken: set[str] = set()
    groups: dict[str, list[str]] = defaultdict(list)
    rows, audits, known = [], [], []
    now = datetime.now(UTC).replace(tzinfo=None)
    ldif = work / "directory.ldif"
    with ldif.open("w", encoding="utf-8") as fh:
        for n, e in enumerate(parsed.entries):
            local = choose_local_part(
                e.given_names, e.surname, taken.__contains__, extra_reserved=reserved
            )
            taken.add(local)
            dn = f"uid={local},{d.councillors_dn}"
            address = f"{local}@{settings.domain}"
            if n < REAL_PASSWORDS:
                password = secrets.token_urlsafe(15)
                password_hash = hash_password(password, argon2_params(settings))
                known.append((dn, password))
            else:
                password_hash = _fake_argon2(settings)
            given = " ".join(e.given_names.split())
            attrs: dict[str, list[str]] = {
                "objectClass": ["top", "person", "organizationalPerson", d.person_object_class],
                "uid": [local],
                "cn": [f"{given} {e.surname}"],
                "sn": [e.surname],
                "givenName": [given],
                "displayName": [f"{given} {e.surname}"],
                d.mail_attribute: [address],
                "userPassword": [password_hash],
                d.status_attribute: [d.active_value],
            }
            for attr, value in (
                (d.external_id_attribute, e.external_id),
                (d.district_attribute, e.district),
                (d.club_attribute, e.club),
                (d.role_attribute, e.role),
                (d.phone_attribute, e.phone),
            ):
                if value:
                    attrs[attr] = [value]
            fh.write(ldif_record(dn, {k: [v.encode() for v in vs] for k, vs in attrs.items()}))
            groups["rada"].append(dn)
            for slug in e.committees:
                groups[f"komisja-{slug}"].append(dn)
            if e.role.startswith("Przewodnicząc"):
                groups["przewodniczacy"].append(dn)
            elif e.role.startswith("wiceprzewodnicząc"):
                groups["wiceprzewodniczacy"].append(dn)
            row = {
                "address": address,
                "dn": dn,
                "external_id": e.external_id,
                "given_names": e.given_names,
                "surname": e.surname,
                "district": e.district,
                "club": e.club,
                "role": e.role,
                "committees": ",".join(e.committees),
                "term_start": e.term_start,
                "mandate_end": e.mandate_end,
                "private_email": e.private_email,
                "phone": e.phone,
                "status": "active",
                "created_at": now,
                "updated_at": now,
            }
            rows.append(row)
            after = repr({k: str(v) for k, v in row.items() if v})
            audits.append(
                {
                    "at": now,
                    "actor": "bench",
                    "command": "mailsvc councillors import radni.csv",
                    "address": address,
                    "action": "create",
                    "before": None,
                    "after": after,
                }
            )
        for name, members in sorted(groups.items()):
            group = {
                "objectClass": [d.group_object_class],
                "cn": [name],
                "description": [f"mailsvc: {name}"],
                d.member_attribute: members,
            }
            dn = f"cn={name},{d.groups_dn}"
            fh.write(ldif_record(dn, {k: [v.encode() for v in vs] for k, vs in group.items()}))
    # slapadd with slapd stopped: ldapadd waits for an fsync per entry (minutes for 50,000).
    stack = LocalStack(settings)
    stack.stop_service("slapd")
    started = time.perf_counter()
    _run(["slapadd", "-q", "-f", str(settings.var_dir / "ldap/slapd.conf"), "-l", str(ldif)])
    stack.start_service("slapd")
    seconds = time.perf_counter() - started
    _step(f"  slapadd of {count:,} councillors and {len(groups)} groups: {seconds:.1f} s")

    async def database() -> None:
        engine = await open_database(settings)
        async with engine.begin() as conn:
            for i in range(0, len(rows), 5000):
                await conn.execute(insert(councillors), rows[i : i + 5000])
                await conn.execute(insert(audit_log), audits[i : i + 5000])
        await engine.dispose()

    asyncio.run(database())
    return known


def add_documents(settings: Settings, megabytes: int) -> None:
    from mailsvc.distribution.documents import store_document

    source = settings.var_dir.parent / f"doc-{os.getpid()}.pdf"
    left = megabytes * MB
    n = 0
    while left > 0:
        size = min(left, 2 * MB)
        source.write_bytes(b"%PDF-1.7\n" + secrets.token_bytes(size))
        store_document(settings.var_dir, source)
        left -= size
        n += 1
    source.unlink(missing_ok=True)


# -- where the time goes ---------------------------------------------------------------------

Phases = dict[str, float]


def time_phases(phases: Phases) -> None:
    """Wrap the steps of backup and restore (module attributes, looked up at call time) so
    that their wall time is added to ``phases``; the rest is the archive (tar, gzip, SHA-256)."""
    from mailsvc.backup import database, directory, restore

    def wrap(owner: Any, attr: str, name: str) -> None:
        real = getattr(owner, attr)
        if asyncio.iscoroutinefunction(real):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await real(*args, **kwargs)
                finally:
                    phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

            setattr(owner, attr, timed_async)
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

        setattr(owner, attr, timed)

    wrap(directory, "export", "backup: directory (slapcat)")
    wrap(database, "take", "backup: database and spool snapshot")
    wrap(restore, "extract_verified", "restore: unpack and verify")
    wrap(database, "restore_sqlite", "restore: database")
    wrap(directory, "load_embedded", "restore: directory (slapadd)")


def _timed_run(phases: Phases, name: str, argv: list[str], **kwargs: Any) -> None:
    start = time.perf_counter()
    _run(argv, **kwargs)
    phases[name] = time.perf_counter() - start


# -- the peer -----------------------------------------------------------------------------------


def _run(argv: list[str], **kwargs: Any) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {(result.stdout + result.stderr).strip()[-2000:]}")


def peer_backup(settings: Settings, work: Path, phases: Phases) -> tuple[float, Path]:
    var_dir = settings.var_dir
    out = work / "peer"
    out.mkdir()
    archive = work / "peer.tar.gz"
    start = time.perf_counter()
    conf, base_dn = str(var_dir / "ldap/slapd.conf"), settings.directory.base_dn
    ldif = str(out / "directory.ldif")
    _timed_run(phases, "backup: slapcat", ["slapcat", "-f", conf, "-b", base_dn, "-l", ldif])
    dump = f".backup {out / 'mailsvc.db'}"
    _timed_run(phases, "backup: sqlite3 .backup", ["sqlite3", str(var_dir / "mailsvc.db"), dump])
    members = ["-C", str(out), "directory.ldif", "mailsvc.db"]
    members += [
        "-C",
        str(var_dir),
        *(d for d in ("secrets", "documents") if (var_dir / d).is_dir()),
    ]
    argv = ["tar", "czf", str(archive), *members]
    _timed_run(phases, "backup: tar czf", argv, env=dict(os.environ, GZIP="-6"))
    return time.perf_counter() - start, archive


def peer_restore(settings: Settings, archive: Path, work: Path, phases: Phases) -> float:
    target = work / "peer-restore"
    target.mkdir()
    conf = work / "peer-slapd.conf"
    original = (settings.var_dir / "ldap/slapd.conf").read_text(encoding="utf-8")
    data = target / "ldap-data"
    conf.write_text(
        original.replace(str(settings.var_dir / "ldap/data"), str(data)), encoding="utf-8"
    )
    start = time.perf_counter()
    _timed_run(phases, "restore: tar xzf", ["tar", "xzf", str(archive), "-C", str(target)])
    data.mkdir(mode=0o700)
    ldif = str(target / "directory.ldif")
    _timed_run(phases, "restore: slapadd", ["slapadd", "-q", "-f", str(conf), "-l", ldif])
    return time.perf_counter() - start


# -- main -------------------------------------------------------------------------------------


def check_restored(restored: Settings, count: int, known: list[tuple[str, str]], work: Path) -> str:
    ldap_port, imap_port, lmtp_port = free_ports(3)
    moved = restored.with_changes(
        stack={"ldap_port": ldap_port, "imap_port": imap_port, "lmtp_port": lmtp_port}
    )
    stack = LocalStack(moved)
    started = time.perf_counter()
    stack.up()
    up = time.perf_counter() - started
    try:
        found = ldap_count(moved, password_file(moved, work))
        if found != count:
            raise SystemExit(f"restored directory holds {found:,} councillors, not {count:,}")
        for dn, password in known:
            if ldap_bind(moved.ldap_url, dn, password) != 0:
                raise SystemExit(f"restored directory refuses the bind of {dn}")
    finally:
        stack.down()
    return f"{found:,} councillors, {len(known)} real binds ok; stack up took {up:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="councillors (50000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT:,} councillors")
    parser.add_argument("--documents-mb", type=int, default=20, help="documents store size")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    count = QUICK_COUNT if args.quick else args.count
    work = Path(tempfile.mkdtemp(prefix="bench-backup-", dir="/tmp"))
    spec = StackSpec.fresh("bb-")
    settings = spec.settings()
    # Its own directory in /tmp: Dovecot (as the user 'mail') must be able to enter it.
    restored_dir = tempfile.mkdtemp(prefix="bb-restored-", dir="/tmp")
    restored = replace(spec, var_dir=restored_dir).settings()
    stack = LocalStack(settings)
    phases: Phases = {}
    peer_phases: Phases = {}
    time_phases(phases)
    try:
        fsync_ms = fsync_probe(work)
        load = os.getloadavg()[0]
        _step(f"stack up, {count:,} councillors, {args.documents_mb} MB of documents (setup)")
        stack.up()
        known = fill(settings, count, args.seed, work)
        add_documents(settings, args.documents_mb)

        _step("mailsvc backup")
        archive = work / "mailsvc.tar.gz"
        report = asyncio.run(create_backup(settings, archive, mailboxes=False))
        _step("mailsvc restore into an empty var_dir")
        started = time.perf_counter()
        asyncio.run(restore_backup(restored, archive))
        restore_seconds = time.perf_counter() - started
        check = check_restored(restored, count, known, work)
        _step("peer: slapcat + sqlite3 .backup + tar czf; tar xzf + slapadd")
        peer_seconds, peer_archive = peer_backup(settings, work, peer_phases)
        peer_size = peer_archive.stat().st_size
        peer_restore_seconds = peer_restore(settings, peer_archive, work, peer_phases)
    finally:
        stack.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(spec.var_dir, ignore_errors=True)
            shutil.rmtree(restored_dir, ignore_errors=True)
    size = report.size
    print(f"\nBackup benchmark, {count:,} councillors, {args.documents_mb} MB of documents")
    for key, value in machine().items():
        print(f"  {key}: {value}")
    print(f"  disk: fdatasync median {fsync_ms:.2f} ms; load average before: {load:.2f}")
    print(f"  restored: {check}")
    print(
        f"  contents: database {report.database_bytes / MB:.1f} MB, directory "
        f"{report.directory_entries:,} entries {report.directory_bytes / MB:.1f} MB (LDIF), "
        f"documents {report.parts['documents'].bytes / MB:.1f} MB, "
        f"secrets {report.parts['secrets'].files} files"
    )
    rows = [
        ("backup time", report.seconds, peer_seconds, "s"),
        ("backup size", size / MB, peer_size / MB, "MB"),
        ("restore time", restore_seconds, peer_restore_seconds, "s"),
    ]
    print(f"\n  {'':<14}{'mailsvc':>12}{'peer':>12}{'ratio':>8}")
    for name, ours, peer, unit in rows:
        print(f"  {name:<14}{ours:>9.2f} {unit:<2}{peer:>9.2f} {unit:<2}{ours / peer:>8.2f}")
    phases["backup: archive (tar, gzip, SHA-256)"] = report.seconds - sum(
        v for k, v in phases.items() if k.startswith("backup:")
    )
    phases["restore: the rest (moving files, secrets)"] = restore_seconds - sum(
        v for k, v in phases.items() if k.startswith("restore:")
    )
    for title, table in (("mailsvc", phases), ("peer", peer_phases)):
        print(f"\n  where the time went, {title}:")
        for name, seconds in sorted(table.items()):
            print(f"    {name:<44}{seconds:>7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
