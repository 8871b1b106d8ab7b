"""provisioning.ldapwire over TLS against the scripted server of test_ldapwire: ldaps://, and
StartTLS before the bind on ldap://, with the certificate and host name verified and no bind
ever sent in clear text when TLS was asked for."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailsvc.relay.smtp.tls import ensure_self_signed
from provisioning.ldapwire import LdapConnectionError, LdapWire
from tests.unit.test_ldapwire import CLASSES, FakeDirectory, entries


@contextlib.asynccontextmanager
async def serving(
    directory: FakeDirectory, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """``directory`` answering on a free loopback port (TLS from the start with ``tls``)."""
    server = await asyncio.start_server(directory.serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in directory.writers:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


def server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server-side context with a certificate for localhost, and that certificate."""
    cert, key = ensure_self_signed(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_ldaps_verifies_the_certificate(tmp_path: Path) -> None:
    server_tls, cert = server_context(tmp_path)
    directory = FakeDirectory()
    async with serving(directory, server_tls) as port:
        url = f"ldaps://localhost:{port}"
        with pytest.raises(LdapConnectionError, match="TLS handshake failed"):
            await LdapWire.connect(url, "cn=admin", "good", 5)
        trusting = ssl.create_default_context(cafile=str(cert))
        async with await LdapWire.connect(url, "cn=admin", "good", 5, ssl_context=trusting) as wire:
            assert await wire.add_many(entries(3), object_classes=CLASSES) == [0, 0, 0]


@pytest.fixture
async def starttls_fake(tmp_path: Path) -> AsyncIterator[tuple[FakeDirectory, str, Path]]:
    """A plain ldap:// server that upgrades to TLS on StartTLS, with a certificate for
    localhost."""
    server_tls, cert = server_context(tmp_path)
    directory = FakeDirectory(starttls=server_tls)
    async with serving(directory) as port:
        yield directory, f"ldap://localhost:{port}", cert


async def test_starttls_comes_before_the_bind_and_everything_after_it_is_encrypted(
    starttls_fake: tuple[FakeDirectory, str, Path],
) -> None:
    server, url, cert = starttls_fake
    trusting = ssl.create_default_context(cafile=str(cert))
    async with await LdapWire.connect(
        url, "cn=admin", "good", 5, ssl_context=trusting, starttls=True
    ) as wire:
        assert await wire.add_many(entries(3), object_classes=CLASSES) == [0, 0, 0]
    assert server.events[:5] == [
        ("extendedReq", False),
        ("bindRequest", True),
        ("addRequest", True),
        ("addRequest", True),
        ("addRequest", True),
    ]


async def test_without_starttls_the_same_server_sees_a_bind_in_clear_text(
    starttls_fake: tuple[FakeDirectory, str, Path],
) -> None:
    # The counterpart of the test above: the fake tells clear text from TLS.
    server, url, _ = starttls_fake
    async with await LdapWire.connect(url, "cn=admin", "good", 5) as wire:
        assert await wire.add_many(entries(1), object_classes=CLASSES) == [0]
    assert server.events[:2] == [("bindRequest", False), ("addRequest", False)]


async def test_a_certificate_that_does_not_verify_after_starttls_stops_before_the_bind(
    starttls_fake: tuple[FakeDirectory, str, Path],
) -> None:
    server, url, _ = starttls_fake
    with pytest.raises(LdapConnectionError, match=r"TLS handshake failed.*certificate"):
        await LdapWire.connect(url, "cn=admin", "good", 5, starttls=True)  # system CAs only
    await asyncio.sleep(0.05)
    assert [name for name, _ in server.events] == ["extendedReq"]


async def test_a_certificate_for_another_host_is_refused(
    starttls_fake: tuple[FakeDirectory, str, Path],
) -> None:
    server, url, cert = starttls_fake
    trusting = ssl.create_default_context(cafile=str(cert))
    other = url.replace("localhost", "127.0.0.1")  # the certificate names only localhost
    with pytest.raises(LdapConnectionError, match="TLS handshake failed"):
        await LdapWire.connect(other, "cn=admin", "good", 5, ssl_context=trusting, starttls=True)
    assert [name for name, _ in server.events] == ["extendedReq"]


@pytest.mark.parametrize("code", [2, 52])  # protocolError (not supported), unavailable
async def test_a_refused_starttls_is_an_error_never_a_bind_in_clear_text(code: int) -> None:
    server = FakeDirectory()
    if code != 2:  # a server without a StartTLS context answers 2
        server.starttls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.starttls_code = code
    async with serving(server) as port:
        with pytest.raises(LdapConnectionError, match=r"refused StartTLS.*use ldaps://") as info:
            await LdapWire.connect(f"ldap://127.0.0.1:{port}", "cn=admin", "good", 5, starttls=True)
        await asyncio.sleep(0.05)
    assert f"({code})" in str(info.value)
    assert [name for name, _ in server.events] == ["extendedReq"]


async def test_starttls_on_ldaps_is_refused() -> None:
    with pytest.raises(ValueError, match="StartTLS is for ldap://"):
        await LdapWire.connect("ldaps://127.0.0.1:1", "cn=admin", "good", 5, starttls=True)


def test_the_pool_makes_its_tls_context_once() -> None:
    # Loading the CA certificates costs tens of milliseconds; it used to happen at every new
    # connection and every bulk addition, on the event loop.
    from provisioning.directory.entries import DirectoryConfig
    from provisioning.directory.pool import ConnectionPool

    config = DirectoryConfig(
        url="ldap://127.0.0.1:1",
        base_dn="dc=x",
        bind_dn="cn=a,dc=x",
        bind_password="",
        councillors_dn="ou=c,dc=x",
        groups_dn="ou=g,dc=x",
        staff_dn="ou=s,dc=x",
    )
    pool = ConnectionPool(config)
    assert pool.ssl_context() is pool.ssl_context()
