"""provisioning.ldapwire and Directory.add_many on the real slapd: pipelined adds read back by
ldap3, duplicates, a wrong password, slapd stopped part-way through, and the brief listing
against ldap3's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from mailsvc.app import open_directory
from mailsvc.config import Settings
from mailsvc.stack import LocalStack
from provisioning.directory import Directory
from provisioning.directory.bulk import list_brief
from provisioning.errors import DirectoryError, DirectoryUnavailable
from provisioning.ldapwire import LdapBindError, LdapResult, LdapWire

# Not in the PostgreSQL pass (make test-postgresql): slapd only.
pytestmark = pytest.mark.no_database

SPECIAL = 'KWW "Niezależni" (lista 5) * a\\b, c+d <e> f=g; h'
DISTRICT = "Okręg *)(uid=*"
ODD_LOCAL = 'x *()\\,+"<>;= y'  # mail is IA5String: the special characters, but ASCII


def requests(directory: Directory, count: int, prefix: str = "t") -> list[tuple[str, Any]]:
    """``count`` councillor entries as the import prepares them; every 50th has an odd uid."""
    out = []
    for i in range(count):
        local = f"{prefix}{i} {ODD_LOCAL}" if i % 50 == 7 else f"{prefix}{i}.żółć"
        address = f"{prefix}{i} {ODD_LOCAL}@rada.example" if i % 50 == 7 else f"{prefix}{i}@r.pl"
        out.append(
            directory.councillor_request(
                local_part=local,
                address=address,
                given_name="Łucja",
                surname=f"Żółć-Gęślą {i}",
                password="Sekret-1234",
                password_hash="{SSHA}c2VrcmV0c2VjcmV0",
                extra={
                    "employeeNumber": f"W{i}",
                    "l": DISTRICT,
                    "o": SPECIAL,
                    "title": ["radna", "przewodnicząca Komisji Budżetowej"],
                },
            )
        )
    return out


async def connect(directory: Directory, password: str | None = None) -> LdapWire:
    c = directory.config
    return await LdapWire.connect(
        c.url, c.bind_dn, c.bind_password if password is None else password, c.timeout
    )


async def test_500_pipelined_adds_are_read_back_literally(directory: Directory) -> None:
    batch = requests(directory, 500)
    classes = ["top", "person", "organizationalPerson", "inetOrgPerson"]
    async with await connect(directory) as wire:
        results = await wire.add_many(batch, object_classes=classes, window=64)
    assert results == [0] * 500
    listed = await directory.list_councillors()
    assert len(listed) == 500
    assert {e.club for e in listed} == {SPECIAL} and {e.district for e in listed} == {DISTRICT}
    assert {e.display_name for e in listed} == {f"Łucja Żółć-Gęślą {i}" for i in range(500)}
    for i in (0, 7, 499):
        _, attrs = batch[i]
        entry = await directory.find_by_address(attrs["mail"])
        assert entry is not None
        assert entry.attributes["uid"] == (attrs["uid"],)
        assert entry.attributes["o"] == (SPECIAL,)
        assert sorted(entry.attributes["title"]) == sorted(attrs["title"])
        assert sorted(entry.attributes["objectClass"]) == sorted(classes)
        assert entry.external_id == f"W{i}"


async def test_directory_add_many_returns_dns_and_already_exists(directory: Directory) -> None:
    batch = requests(directory, 30)
    assert await directory.add_many(batch) == [dn for dn, _ in batch]
    again = await directory.add_many([*batch[:5], *requests(directory, 3, prefix="n")])
    for dn, outcome in zip([dn for dn, _ in batch[:5]], again[:5], strict=True):
        assert isinstance(outcome, DirectoryError)
        assert not isinstance(outcome, DirectoryUnavailable)
        assert str(outcome) == f"{dn} already exists"
    assert all(isinstance(o, str) for o in again[5:])
    async with await connect(directory) as wire:
        codes = await wire.add_many(batch[:3], object_classes=["top", "inetOrgPerson"])
    assert [r.code for r in codes if isinstance(r, LdapResult)] == [68, 68, 68]


async def test_a_schema_violation_fails_that_entry_only(directory: Directory) -> None:
    batch = requests(directory, 3)
    dn, attrs = batch[1]
    batch[1] = (dn, {**attrs, "displayName": ["one", "two"]})  # single-valued
    outcomes = await directory.add_many(batch)
    assert outcomes[0] == batch[0][0] and outcomes[2] == batch[2][0]
    assert isinstance(outcomes[1], DirectoryError)
    assert not isinstance(outcomes[1], DirectoryUnavailable)
    assert "constraintViolation (19)" in str(outcomes[1])


async def test_a_wrong_bind_password_is_a_clear_error(directory: Directory) -> None:
    with pytest.raises(LdapBindError, match="invalidCredentials") as info:
        await connect(directory, password="not-the-password")
    assert info.value.result.code == 49
    wrong = Directory(replace(directory.config, bind_password="not-the-password"))
    with pytest.raises(
        DirectoryError, match=r"refused the bind .* check the directory credentials"
    ):
        await wrong.add_many(requests(directory, 2))


async def test_slapd_stopped_part_way_leaves_the_rest_temporary_and_a_rerun_completes(
    new_stack_settings: Callable[[], Settings],
) -> None:
    settings = new_stack_settings()
    stack = LocalStack(settings)
    await asyncio.to_thread(stack.start_service, "slapd")
    directory = open_directory(settings)
    watcher = open_directory(settings)
    batch = requests(directory, 3000)
    try:
        adding = asyncio.create_task(directory.add_many(batch))
        while len(await watcher.list_councillors(brief=True)) < 100:
            assert not adding.done(), "all entries were added before slapd could be stopped"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(stack.stop_service, "slapd")
        outcomes = await adding
        added = [o for o in outcomes if isinstance(o, str)]
        failed = [o for o in outcomes if isinstance(o, Exception)]
        assert 100 <= len(added) < 3000 and len(added) + len(failed) == 3000
        assert all(isinstance(o, DirectoryUnavailable) for o in failed)
        assert "unreachable" in str(failed[0])

        await asyncio.to_thread(stack.start_service, "slapd")
        await watcher.close()  # its pooled connection died with slapd
        watcher = open_directory(settings)
        rerun = await directory.add_many(batch)
        # Added before: "already exists" (so is an add slapd made but could not answer).
        exists = [o for o in rerun if isinstance(o, DirectoryError)]
        assert all(str(o).endswith("already exists") for o in exists)
        assert len(exists) >= len(added)
        assert all(rerun[i] != dn for i, dn in enumerate(outcomes) if isinstance(dn, str))
        assert len(await watcher.list_councillors(brief=True)) == 3000
    finally:
        await directory.close()
        await watcher.close()


async def test_the_brief_listing_is_what_ldap3_reads_page_by_page(directory: Directory) -> None:
    # 120 entries in pages of 7 (the last one short), odd addresses among them, some disabled.
    batch = requests(directory, 120)
    dns = await directory.add_many(batch)
    assert all(isinstance(dn, str) for dn in dns)
    for dn in dns[::9]:
        await directory.set_active(str(dn), False)
    c, dialect = directory.config, directory.dialect
    status = dialect.status_attributes()
    wanted = [c.mail_attribute, *status]
    by_ldap3 = await directory._list(c.councillors_dn, wanted, 2000, keep_raw=False)
    ours = await list_brief(c, directory.ssl_context(), status, dialect.is_active, page_size=7)
    assert len(ours) == 120 and sum(not e.active for e in ours) == 14
    assert sorted(ours, key=lambda e: e.dn) == sorted(by_ldap3, key=lambda e: e.dn)
    assert await directory.list_councillors(brief=True) == ours


async def test_the_brief_listing_names_a_wrong_password_and_a_missing_subtree(
    directory: Directory,
) -> None:
    c, dialect = directory.config, directory.dialect
    status, context = dialect.status_attributes(), directory.ssl_context()
    with pytest.raises(DirectoryError, match="refused the bind"):
        await list_brief(replace(c, bind_password="wrong"), context, status, dialect.is_active)
    with pytest.raises(DirectoryError, match="noSuchObject"):
        missing = replace(c, councillors_dn="ou=nikt," + c.base_dn)
        await list_brief(missing, context, status, dialect.is_active)
