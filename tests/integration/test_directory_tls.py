"""ldaps:// with a self-signed directory certificate: trusted through directory.ca_file, for the
adapter (ldap3) and for bulk additions (ldapwire) alike; refused without it.

A second slapd serves a copy of the session's directory over ldaps:// only, with a certificate
made for the test; the session's own slapd is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailsvc.app import directory_config
from mailsvc.config import Settings
from mailsvc.relay.smtp.tls import ensure_self_signed
from mailsvc.stack import LocalStack, free_ports
from provisioning.directory import Directory, DirectoryUnavailable


@pytest.fixture
def ldaps(stack_settings: Settings, local_stack: LocalStack, tmp_path: Path) -> Iterator[Any]:
    cert, key = ensure_self_signed(tmp_path / "tls", "localhost")
    ldap_dir = stack_settings.var_dir / "ldap"
    data = tmp_path / "data"
    shutil.copytree(ldap_dir / "data", data, ignore=shutil.ignore_patterns("lock.mdb"))
    conf = (ldap_dir / "slapd.conf").read_text()
    conf = conf.replace(f'"{ldap_dir / "data"}"', f'"{data}"').replace(
        str(ldap_dir / "data"), str(data)
    )
    tls = f'TLSCertificateFile "{cert}"\nTLSCertificateKeyFile "{key}"\n\n'
    conf = conf.replace("database mdb", tls + "database mdb", 1)
    (tmp_path / "slapd.conf").write_text(conf)
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            stack_settings.stack.slapd,
            "-f",
            str(tmp_path / "slapd.conf"),
            "-h",
            f"ldaps://127.0.0.1:{port}/",
            "-d",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "ldaps slapd did not come up"
            time.sleep(0.05)
        yield f"ldaps://localhost:{port}", cert
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def directory_at(settings: Settings, url: str, ca_file: str) -> Directory:
    return Directory(replace(directory_config(settings), url=url, ca_file=ca_file))


async def test_a_self_signed_directory_is_trusted_through_its_ca_file(
    stack_settings: Settings, ldaps: Any
) -> None:
    url, cert = ldaps
    directory = directory_at(stack_settings, url, str(cert))
    try:
        # The adapter's own reads (ldap3) ...
        assert await directory.find_by_address(f"nikt@{stack_settings.domain}") is None
        # ... and a bulk addition (ldapwire), on the same verified footing.
        request = directory.councillor_request(
            local_part="tls.test",
            address=f"tls.test@{stack_settings.domain}",
            given_name="Tomasz",
            surname="Szyfrowany",
            password_hash="{SSHA}x",
        )
        (result,) = await directory.add_many([request])
        assert not isinstance(result, Exception), result
        found = await directory.find_by_address(f"tls.test@{stack_settings.domain}")
        assert found is not None and found.dn == result
    finally:
        await directory.close()


async def test_without_its_ca_file_the_self_signed_directory_is_refused(
    stack_settings: Settings, ldaps: Any
) -> None:
    url, _cert = ldaps
    directory = directory_at(stack_settings, url, "")
    try:
        # ldap3 alone would accept any certificate; the adapter verifies it.
        with pytest.raises(DirectoryUnavailable):
            await directory.find_by_address(f"nikt@{stack_settings.domain}")
        request = directory.councillor_request(
            local_part="tls.refused",
            address=f"tls.refused@{stack_settings.domain}",
            given_name="Anna",
            surname="Odrzucona",
            password_hash="{SSHA}x",
        )
        results = await asyncio.wait_for(directory.add_many([request]), 30)
        assert len(results) == 1 and isinstance(results[0], Exception)
        assert "certificate" in str(results[0]).lower() or "tls" in str(results[0]).lower()
    finally:
        await directory.close()
