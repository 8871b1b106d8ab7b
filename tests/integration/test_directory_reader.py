"""RCPT lookups bind as the directory's reader and read only the address and the status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailsvc.app import Service, open_reader_directory
from mailsvc.config import Settings
from mailsvc.relay.smtp.recipients import CachedRecipients
from provisioning.directory import Directory
from tests.integration.conftest import make_message, smtp_send

# Run against Samba's AD DC too (make test-samba): what the directory server may change.
pytestmark = pytest.mark.directory


@pytest.mark.no_database  # the directory only
async def test_the_reader_finds_a_recipient_with_only_its_address_and_status(
    settings: Settings, directory: Directory, add_councillor: Callable[[str, str], Any]
) -> None:
    account = await add_councillor("Anna", "Czytelnik")
    reader = open_reader_directory(settings)
    try:
        assert reader.config.bind_dn == settings.ldap.reader_dn
        entry = await CachedRecipients(reader, ttl=0).find_by_address(account.address)
        assert entry is not None
        assert (entry.address, entry.active) == (account.address, True)
        assert entry.attributes == {}  # nothing kept beyond what the RCPT check needs
        assert entry.display_name == ""  # and nothing else was even asked for
        assert await reader.find_recipient(f"nobody@{settings.domain}") is None
    finally:
        await reader.close()


@pytest.mark.no_database  # the directory only
async def test_the_full_lookup_never_carries_the_password_hash(
    directory: Directory, add_councillor: Callable[[str, str], Any]
) -> None:
    # The provisioning adapter binds as the admin, who could read userPassword.
    account = await add_councillor("Adam", "Bezhasla")
    entry = await directory.find_by_address(account.address)

    assert entry is not None
    assert entry.login == "adam.bezhasla" and entry.display_name == "Adam Bezhasla"
    assert not {name.lower() for name in entry.attributes} & {"userpassword", "unicodepwd"}


async def test_the_service_checks_recipients_as_the_reader(
    service: Service, add_councillor: Callable[[str, str], Any]
) -> None:
    account = await add_councillor("Ewa", "Odbiorca")

    assert service.reader is not None
    assert service.reader.config.bind_dn == service.settings.ldap.reader_dn
    refused = await smtp_send(
        service.smtp_port, [account.address], make_message(account.address, "Test")
    )
    assert refused == {}
