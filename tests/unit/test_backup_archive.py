"""The backup file on its own: manifest and checksums, a damaged or tampered file changes
nothing, restore refuses a var_dir that is not empty, and the LDIF the directory is kept in."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from mailsvc.backup import BackupError, restore_backup
from mailsvc.backup.archive import MANIFEST, ArchiveWriter, extract_verified
from mailsvc.backup.directory import ldif_record, read_ldif
from mailsvc.config import DEFAULT_CONFIG, Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(DEFAULT_CONFIG, env={}).with_changes(var_dir=tmp_path / "var")


def _archive(tmp_path: Path) -> Path:
    source = tmp_path / "document.pdf"
    source.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 64)
    writer = ArchiveWriter(tmp_path / "backup.tar.gz")
    writer.add_file("var/documents/ab/abcdef", source)
    writer.add_bytes("var/secrets/ldap-admin", b"hunter2-but-longer\n")
    writer.add_dir("var/mail/rada.miasto.example/anna.nowak/tmp")
    writer.finish({"database": {"kind": "sqlite"}})
    return tmp_path / "backup.tar.gz"


def test_archive_lists_every_member_with_its_checksum_and_is_private(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*partial"))
    staging = tmp_path / "staging"
    staging.mkdir()
    manifest = extract_verified(archive, staging)
    assert manifest["format"] == "mailsvc-backup" and manifest["format_version"] == 1
    assert manifest["database"] == {"kind": "sqlite"}
    members = manifest["members"]
    assert members["var/secrets/ldap-admin"]["size"] == 19
    assert len(members["var/documents/ab/abcdef"]["sha256"]) == 64
    assert members["var/mail/rada.miasto.example/anna.nowak/tmp"] == {"dir": True}
    restored = staging / "var/documents/ab/abcdef"
    assert restored.read_bytes() == (tmp_path / "document.pdf").read_bytes()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    assert (staging / "var/mail/rada.miasto.example/anna.nowak/tmp").is_dir()


def _rewrite(archive: Path, change: dict[str, bytes]) -> None:
    """The same members (manifest included, unchanged) with some contents replaced."""
    with tarfile.open(archive, "r:gz") as tar:
        items = [(i, tar.extractfile(i).read() if i.isfile() else b"") for i in tar]  # type: ignore[union-attr]
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in items:
            data = change.get(info.name, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def test_a_damaged_archive_restores_nothing(settings: Settings, tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="damaged or not a mailsvc backup"):
        asyncio.run(restore_backup(settings, archive))
    assert not settings.var_dir.exists()


def test_a_member_changed_after_the_backup_restores_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    archive = _archive(tmp_path)
    _rewrite(archive, {"var/secrets/ldap-admin": b"someone-elses-password\n"})
    settings.var_dir.mkdir()  # an empty var_dir is accepted, and stays empty
    with pytest.raises(BackupError, match="does not match its manifest") as caught:
        asyncio.run(restore_backup(settings, archive))
    assert "var/secrets/ldap-admin" in str(caught.value)
    assert list(settings.var_dir.iterdir()) == []


def test_a_manifest_without_its_members_or_with_unsafe_names_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    with tarfile.open(archive, "r:gz") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    manifest["members"]["var/secrets/dkim-x.pem"] = {"size": 1, "sha256": "0" * 64}
    _rewrite(archive, {MANIFEST: json.dumps(manifest).encode()})
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(BackupError, match="1 missing"):
        extract_verified(archive, staging)

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BackupError, match="unsafe name"):
        extract_verified(evil, tmp_path / "staging2")
    assert not (tmp_path / "outside").exists()


def test_restore_refuses_a_var_dir_that_is_not_empty(settings: Settings, tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    settings.var_dir.mkdir()
    (settings.var_dir / "mailsvc.db").write_bytes(b"the live database")
    with pytest.raises(BackupError) as caught:
        asyncio.run(restore_backup(settings, archive))
    message = str(caught.value)
    assert f"var_dir {settings.var_dir.absolute()} is not empty" in message
    assert "mailsvc.db" in message
    assert [p.name for p in settings.var_dir.iterdir()] == ["mailsvc.db"]


def test_ldif_keeps_binary_and_non_ascii_values(tmp_path: Path) -> None:
    entry = {
        "objectClass": [b"top", b"inetOrgPerson"],
        "cn": ["Łukasz Żółć".encode()],
        "userPassword": [b"{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"],
        "jpegPhoto": [bytes(range(256))],
        "description": [b" leading space", b"trailing space "],
    }
    path = tmp_path / "d.ldif"
    path.write_text(ldif_record("uid=lukasz.zolc,ou=councillors,dc=x", entry), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert "userPassword: {ARGON2}$argon2id$" in text and "cn:: " in text
    # slapcat folds long lines; a folded copy reads the same.
    folded = "\n".join(
        line[:40] + "".join("\n " + line[i : i + 40] for i in range(40, len(line), 40))
        for line in text.splitlines()
    )
    (tmp_path / "f.ldif").write_text(folded + "\n", encoding="utf-8")
    for source in (path, tmp_path / "f.ldif"):
        assert list(read_ldif(source)) == [("uid=lukasz.zolc,ou=councillors,dc=x", entry)]
