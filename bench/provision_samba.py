"""Provisioning benchmark on Samba's AD DC (`bench/provision.py --directory samba`, issue #16).

The roster and the import child of bench/provision.py, with the service in directory.kind "ad"
against the embedded stack's Samba (stack.directory = "samba"). Two (three with ldbadd) private
Samba domains, each provisioned into a temporary var_dir under /tmp on a free loopback address
of its own (Samba's ports 389 and 636 cannot be moved), always stopped at the end:

1. first import of N synthetic councillors (all creations)    → entries/s, peak RSS
2. the same roster again (must plan and apply 0 changes)      → wall time
3. peer: ldapadd of the same N entries over LDAPS into the 2nd domain, as the Administrator
   (the attributes the service writes, unicodePwd and userAccountControl included)
                                                              → entries/s, ratio mailsvc / ldapadd
4. peer: ldbadd of the same LDIF straight into a 3rd domain's sam.ldb (Samba's own tool on
   its database, no LDAP, one transaction; the DC keeps running, as samba-tool does it; needs
   ldb-tools, else skipped)
                                                              → entries/s, ratio mailsvc / ldbadd

AD hashes the passwords itself (the service sends them in clear over TLS), so there is no
Argon2id step on either side. The peers add no groups; the import also syncs its groups.

    .venv/bin/python bench/provision.py --directory samba --count 500
    .venv/bin/python bench/provision.py --directory samba --count 10000 --skip-ldbadd
    .venv/bin/python bench/provision.py --directory samba --count 50000 --skip-ldbadd --peer-beside

--peer-beside runs step 3 at the same time as step 1, each into its own DC (Samba's DC is one
process: on two cores each gets one). Both then see the same machine, whatever else runs on it,
and the two passes take one pass's wall time: at 50,000 one pass is 1-2 hours here, because
Samba's cost per added user grows with the number of users already in the domain.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision import (
    HEADER,
    Person,
    StackSpec,
    _mb,
    _print_phases,
    _rate,
    _step,
    _table,
    first_import,
    fsync_probe,
    load_patch,
    machine,
    make_council,
    person_dns,
    process_cpu,
    run_import_in_child,
    write_roster,
)

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.stack import LocalStack, free_ports, samba
from mailsvc.stack.supervise import port_in_use
from provisioning import roster as roster_module

# --- private Samba stacks -------------------------------------------------------------------


def free_samba_host() -> str:
    """A random 127.x.y.z on which all of Samba's fixed ports are free (as the tests pick
    theirs, tests/conftest.py), so that the benchmark never meets a developer's stack."""
    for _ in range(50):
        host = f"127.{random.randint(64, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if not any(port_in_use(host, port) for _, port in samba.PORTS):
            return host
    raise SystemExit(f"Samba's ports {samba.PORTS} are taken on every loopback address tried")


@dataclass(frozen=True)
class SambaStackSpec(StackSpec):
    """StackSpec of a stack whose directory is Samba's AD DC on ``samba_host``."""

    samba_host: str

    @classmethod
    def fresh(cls, prefix: str) -> SambaStackSpec:
        # Short names: Samba's deepest socket path must fit in 107 bytes.
        var_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        ldap_port, imap_port, lmtp_port, smtp_port = free_ports(4)
        return cls(var_dir, ldap_port, imap_port, lmtp_port, smtp_port, free_samba_host())

    def settings(self) -> Settings:
        return (
            super()
            .settings()
            .with_changes(
                stack={"directory": "samba", "samba_host": self.samba_host},
            )
        )


def samba_pid(stack: LocalStack) -> int:
    for status in stack.status():
        if status.name == "samba" and status.pid is not None:
            return status.pid
    raise SystemExit(f"samba of {stack.settings.var_dir} is not running")


class SambaCpu:
    """CPU seconds the DC's process spends during a step (it runs as one process)."""

    def __init__(self, stack: LocalStack) -> None:
        self.pid = samba_pid(stack)
        self.start = process_cpu(self.pid)

    def used(self) -> float:
        return process_cpu(self.pid) - self.start


# --- the peers: the same entries as LDIF -----------------------------------------------------


def _ldif_value(attr: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        return f"{attr}:: {base64.b64encode(value).decode('ascii')}\n"
    safe = value.isascii() and value == value.strip() and not value.startswith((":", "<", " "))
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def _ldif_entry(dn: str, classes: list[str], attributes: Mapping[str, Any]) -> str:
    lines = [_ldif_value("dn", dn), *(_ldif_value("objectClass", c) for c in classes)]
    for attr, value in attributes.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        lines += [_ldif_value(attr, v) for v in values]
    return "".join(lines) + "\n"


def write_ad_ldif(path: Path, settings: Settings, people: list[Person]) -> list[str]:
    """The entries the import creates in AD, made by the service's own code
    (Directory.councillor_request with roster_attributes, addresses chosen in roster order as
    Councillors.choose_addresses does, each with a fresh password of the configured length).
    Returns their DNs."""
    from mailsvc.app import open_directory
    from mailsvc.directory.councillors import committee_group
    from provisioning.naming import choose_local_part
    from provisioning.passwords import generate_password
    from provisioning.roster import parse_roster_text

    directory = open_directory(settings)  # connects lazily: nothing is opened here
    parsed = parse_roster_text(
        "\n".join(";".join(row) for row in [list(HEADER), *(p.row() for p in people)]),
        committees=settings.committee_names,
    )
    if parsed.problems:
        raise SystemExit(f"generated roster has problems, e.g. {parsed.problems[0]}")
    reserved = set(settings.committee_names) | {
        committee_group(s) for s in settings.committee_names
    }
    login_for = directory.dialect.login_for
    taken: set[str] = set()
    logins: set[str] = set()
    domain = settings.domain.lower()
    length = settings.provisioning.password_length
    classes = directory.dialect.person_classes()
    dns = []
    with path.open("w", encoding="utf-8") as fh:
        for e in parsed.entries:

            def is_taken(local: str) -> bool:
                return local in taken or login_for(local).lower() in logins

            local = choose_local_part(e.given_names, e.surname, is_taken, extra_reserved=reserved)
            taken.add(local)
            logins.add(login_for(local).lower())
            dn, attributes = directory.councillor_request(
                local_part=local,
                address=f"{local}@{domain}",
                given_name=" ".join(e.given_names.split()),
                surname=e.surname,
                password=generate_password(length),
                extra=directory.roster_attributes(
                    external_id=e.external_id,
                    district=e.district,
                    club=e.club,
                    role=e.role,
                    phone=e.phone,
                ),
            )
            fh.write(_ldif_entry(dn, classes, {k: v for k, v in attributes.items() if v}))
            dns.append(dn)
    return dns


def administrator_password_file(settings: Settings, directory: Path) -> Path:
    """The domain Administrator's password in a 0600 file for ldap-utils' -y."""
    path = directory / "samba-admin.pw"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret_store.samba_admin_password(settings))
    return path


def _ldap_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "LDAPTLS_CACERT": str(settings.samba_directory.ca_file)}


def _run_measured(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[int, str, float, float]:
    """Run ``argv`` to its end: exit code, output, wall seconds and the CPU seconds of that
    process alone (its own rusage from wait4: right also while other children run beside)."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return proc.returncode, text, seconds, usage.ru_utime + usage.ru_stime


def run_ldapadd(settings: Settings, ldif: Path, pw: Path) -> tuple[float, float]:
    """ldapadd of ``ldif`` over LDAPS as the Administrator: wall and ldapadd's CPU seconds."""
    ad = settings.samba_directory
    argv = ["ldapadd", "-x", "-H", ad.url, "-D", ad.admin_dn, "-y", str(pw), "-f", str(ldif)]
    code, output, seconds, cpu = _run_measured(argv, env=_ldap_env(settings))
    if code != 0:
        raise SystemExit(f"ldapadd failed ({code}): {output.strip()[-2000:]}")
    return seconds, cpu


def run_ldbadd(settings: Settings, ldif: Path) -> tuple[float, float]:
    """ldbadd of ``ldif`` into the DC's sam.ldb (tdb://, through Samba's own modules, as the
    system; one transaction for the whole file): wall and ldbadd's CPU seconds."""
    sam = settings.samba_directory.samba_dir / "private" / "sam.ldb"
    code, output, seconds, cpu = _run_measured(["ldbadd", "-H", f"tdb://{sam}", str(ldif)])
    if code != 0:
        raise SystemExit(f"ldbadd failed ({code}): {output.strip()[-2000:]}")
    return seconds, cpu


def councillor_dns(settings: Settings, pw: Path) -> set[str]:
    """The DNs of the user objects under the councillors' OU, read with ldapsearch over LDAPS."""
    ad = settings.samba_directory
    return person_dns(ad.url, ad.admin_dn, pw, settings, env=_ldap_env(settings))


# --- main ---------------------------------------------------------------------------------


def _samba_version() -> str:
    result = subprocess.run(["samba", "--version"], capture_output=True, text=True)
    return result.stdout.strip() or "?"


def run(args: argparse.Namespace) -> int:
    """The Samba run of bench/provision.py (its parsed arguments; --directory samba)."""
    if args.slapd_nosync:
        raise SystemExit("--slapd-nosync is for slapd; there is none with --directory samba")
    count: int = args.count
    work = Path(tempfile.mkdtemp(prefix="bps-", dir="/tmp"))
    ours = SambaStackSpec.fresh("bps-ours-")
    peer = SambaStackSpec.fresh("bps-ldapadd-")
    ldb = SambaStackSpec.fresh("bps-ldbadd-")
    stacks: list[LocalStack] = []
    notes = [
        "welcome messages off (provisioning.send_welcome = false)",
        "the service's defaults (directory.timeout 5 s; with Active Directory its adds go on "
        "one connection, four in flight)",
    ]
    if args.patch:
        args.patch = str(Path(args.patch).absolute())
        load_patch(args.patch)
        notes.append(f"patched with {args.patch} (--patch): not the code in the tree")
    load_before = os.getloadavg()[0]
    fsync_before = fsync_probe(work)
    ldapadd_seconds = ldbadd_seconds = None
    ldapadd_cpu = peer_dc_cpu = ldbadd_cpu = 0.0
    try:
        _step(f"generating {count:,} councillors")
        council = make_council(count, args.seed)
        roster = work / "radni.csv"
        write_roster(roster, council.people, args.encoding)
        max_bytes = None
        if roster.stat().st_size > roster_module.DEFAULT_MAX_BYTES:
            max_bytes = roster.stat().st_size
            notes.append(f"max_bytes={max_bytes:,} passed to run_import (roster over the default)")

        ours_settings = ours.settings()
        stack = LocalStack(ours_settings)
        stacks.append(stack)
        _step(f"provisioning and starting Samba + Dovecot in {ours.var_dir} ({ours.samba_host})")
        started = time.perf_counter()
        stack.up()
        provision_seconds = time.perf_counter() - started

        beside = args.peer_beside and not args.skip_peer
        peer_settings = peer.settings()
        ldif = work / "radni.ldif"
        peer_dns: set[str] = set()
        peer_stack: LocalStack | None = None
        pw = work / "peer" / "samba-admin.pw"
        if not args.skip_peer:
            peer_dns = {dn.lower() for dn in write_ad_ldif(ldif, peer_settings, council.people)}
            peer_stack = LocalStack(peer_settings)
            stacks.append(peer_stack)
            if beside:
                _step(f"provisioning and starting a second Samba in {peer.var_dir}")
                peer_stack.start_service("samba")
                (work / "peer").mkdir()
                pw = administrator_password_file(peer_settings, work / "peer")
                notes.append(
                    "--peer-beside: ldapadd ran into the second domain at the same time as the "
                    "first import, each DC (one process) with the same machine around it"
                )

        ldapadd_future: Future[tuple[float, float]] | None = None
        with ThreadPoolExecutor(1) as pool:
            if beside:
                assert peer_stack is not None
                _step(f"1/4 + 3/4 first import of {count:,} councillors, ldapadd beside it")
                peer_cpu = SambaCpu(peer_stack)
                ldapadd_future = pool.submit(run_ldapadd, peer_settings, ldif, pw)
            else:
                _step(f"1/4 first import of {count:,} councillors")
            first = first_import(
                ours, roster, max_bytes, args.patch, count, SambaCpu(stack), "dc_cpu_seconds"
            )
            _step(f"    {count:,} created in {first['seconds']:.1f} s")
            if ldapadd_future is not None:
                ldapadd_seconds, ldapadd_cpu = ldapadd_future.result()
                peer_dc_cpu = peer_cpu.used()
                _step(f"    ldapadd: {ldapadd_seconds:.1f} s")

        _step("2/4 the same roster again (no changes)")
        dc_cpu = SambaCpu(stack)
        again = run_import_in_child(ours, roster, max_bytes, args.patch)
        again["dc_cpu_seconds"] = dc_cpu.used()
        assert again["error_count"] == 0, again["errors"]
        no_changes = (again["created"], again["updated"], again["disabled"])
        assert no_changes == (0, 0, 0), f"a no-change import changed {no_changes}"
        assert again["unchanged"] == count, f"unchanged {again['unchanged']} of {count}"
        _step(f"    0 changes in {again['seconds']:.1f} s")

        (work / "ours").mkdir()
        ours_pw = administrator_password_file(ours_settings, work / "ours")
        ours_dns = councillor_dns(ours_settings, ours_pw)
        assert len(ours_dns) == count, f"the import left {len(ours_dns)} entries, not {count}"

        if peer_stack is not None:
            if peer_dns != ours_dns:
                notes.append(
                    f"the peers' DNs differ from the import's in {len(peer_dns ^ ours_dns)} "
                    "entries (address choice)"
                )
            if not beside:
                _step(f"provisioning and starting a second Samba in {peer.var_dir}")
                peer_stack.start_service("samba")
                _step("3/4 peer: ldapadd of the same entries over LDAPS")
                (work / "peer").mkdir()
                pw = administrator_password_file(peer_settings, work / "peer")
                dc_cpu = SambaCpu(peer_stack)
                ldapadd_seconds, ldapadd_cpu = run_ldapadd(peer_settings, ldif, pw)
                peer_dc_cpu = dc_cpu.used()
                _step(f"    ldapadd: {ldapadd_seconds:.1f} s")
            got = len(councillor_dns(peer_settings, pw))
            assert got == count, f"ldapadd left {got} entries, expected {count}"

            if not args.skip_ldbadd and shutil.which("ldbadd") is None:
                notes.append("no ldbadd on this machine (apt-get install ldb-tools): skipped")
            elif not args.skip_ldbadd:
                ldb_settings = ldb.settings()
                ldb_stack = LocalStack(ldb_settings)
                stacks.append(ldb_stack)
                _step(f"provisioning and starting a third Samba in {ldb.var_dir}")
                ldb_stack.start_service("samba")
                _step("4/4 peer: ldbadd of the same entries into its sam.ldb")
                ldbadd_seconds, ldbadd_cpu = run_ldbadd(ldb_settings, ldif)
                _step(f"    ldbadd: {ldbadd_seconds:.1f} s")
                (work / "ldb").mkdir()
                pw = administrator_password_file(ldb_settings, work / "ldb")
                got = len(councillor_dns(ldb_settings, pw))
                assert got == count, f"ldbadd left {got} entries, expected {count}"
        fsync_after = fsync_probe(work)
    finally:
        for s in reversed(stacks):
            try:
                s.down()
            except Exception as exc:  # report and go on stopping the others
                print(f"could not stop the stack in {s.settings.var_dir}: {exc}", file=sys.stderr)
        dirs = (work, Path(ours.var_dir), Path(peer.var_dir), Path(ldb.var_dir))
        if args.keep:
            print(f"kept: {' '.join(map(str, dirs))}", file=sys.stderr)
        else:
            for path in dirs:
                shutil.rmtree(path, ignore_errors=True)

    info = machine()
    info["samba"] = _samba_version()
    print()
    print(f"Provisioning benchmark on Samba's AD DC: {count:,} councillors, one run")
    for key, value in info.items():
        print(f"  {key + ':':<8} {value}")
    print(
        f"  disk:    fdatasync of 4 KiB in /tmp {fsync_before:.2f} ms before, "
        f"{fsync_after:.2f} ms after (median of 50)"
    )
    print(f"  load:    {load_before:.2f} (1-minute load average at the start)")
    print(f"  domain:  provisioned and started in {provision_seconds:.1f} s (the first stack)")
    for note in notes:
        print(f"  note:    {note}")
    print()

    def ratio(peer_seconds: float | None) -> str:
        return "—" if peer_seconds is None else f"{peer_seconds / first['seconds']:.2f}"

    def peer_row(peer_seconds: float | None, skipped: str) -> str:
        if peer_seconds is None:
            return skipped
        return f"{peer_seconds:.1f} s = {_rate(count, peer_seconds)}"

    per = 1000 / count
    ours_cpu = first["cpu_seconds"] + first["dc_cpu_seconds"]
    rows = [
        (
            "mailsvc import, all creations",
            f"{first['seconds']:.1f} s = {_rate(count, first['seconds'])}",
        ),
        ("ldapadd over LDAPS, same entries", peer_row(ldapadd_seconds, "skipped (--skip-peer)")),
        ("ratio mailsvc / ldapadd", ratio(ldapadd_seconds)),
        ("ldbadd into sam.ldb, same entries", peer_row(ldbadd_seconds, "skipped")),
        ("ratio mailsvc / ldbadd", ratio(ldbadd_seconds)),
        (
            "CPU per entry, mailsvc import",
            f"{ours_cpu * per:.2f} ms (import process {first['cpu_seconds'] * per:.2f} "
            f"+ samba {first['dc_cpu_seconds'] * per:.2f})",
        ),
        (
            "CPU per entry, ldapadd",
            "—"
            if ldapadd_seconds is None
            else f"{(ldapadd_cpu + peer_dc_cpu) * per:.2f} ms (ldapadd {ldapadd_cpu * per:.2f} "
            f"+ samba {peer_dc_cpu * per:.2f})",
        ),
        (
            "CPU per entry, ldbadd",
            "—" if ldbadd_seconds is None else f"{ldbadd_cpu * per:.2f} ms (ldbadd alone)",
        ),
        (
            "no-change import (0 changes)",
            f"{again['seconds']:.1f} s (samba CPU {again['dc_cpu_seconds']:.1f} s)",
        ),
        (
            "peak RSS of an import with its roster reader, at once",
            f"first {_mb(first['max_rss_bytes'])}, no-change {_mb(again['max_rss_bytes'])}",
        ),
    ]
    for line in _table([(name, value, "", "") for name, value in rows]):
        print(line)
    print()
    print("Where the import time goes (wall time of the real methods, measured by wrappers):")
    for label, report in (("first import", first), ("no-change", again)):
        print(f"  {label}: {report['seconds']:.2f} s in the import, "
              f"{report['process_seconds']:.2f} s with process start-up")  # fmt: skip
        _print_phases(report)
    return 0


if __name__ == "__main__":
    from provision import main

    sys.exit(main(["--directory", "samba", *sys.argv[1:]]))
