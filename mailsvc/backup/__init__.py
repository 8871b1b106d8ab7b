"""Backups: `mailsvc backup FILE` while the service runs, `mailsvc restore FILE` into an empty
var_dir. archive.py is the file format (tar.gz with a checksummed manifest), database.py the
consistent snapshot of the database and the queue's spool files, directory.py the directory as
LDIF, files.py the rest of var_dir; create.py and restore.py put them together."""

from mailsvc.backup.archive import BackupError
from mailsvc.backup.create import BackupReport, create_backup
from mailsvc.backup.restore import RestoreReport, restore_backup

__all__ = ["BackupError", "BackupReport", "RestoreReport", "create_backup", "restore_backup"]
