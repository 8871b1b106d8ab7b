"""User-facing text: Polish by default, English beside it. Keys are stable ids."""

from __future__ import annotations

from typing import Any

MESSAGES: dict[str, dict[str, str]] = {
    "councillor.created": {
        "pl": "Utworzono skrzynkę: {address}\nHasło początkowe: {password}",
        "en": "Mailbox created: {address}\nInitial password: {password}",
    },
    "import.summary": {
        "pl": "Import {path}: utworzono {created}, pominięto istniejących {existing}.",
        "en": "Import {path}: created {created}, skipped existing {existing}.",
    },
    "stack.up": {"pl": "Stos lokalny działa:", "en": "Local stack is running:"},
    "stack.down": {"pl": "Zatrzymano: {names}", "en": "Stopped: {names}"},
    "stack.down.none": {"pl": "Nic nie było uruchomione.", "en": "Nothing was running."},
    "status.running": {"pl": "działa", "en": "running"},
    "status.stopped": {"pl": "zatrzymany", "en": "stopped"},
    "check.ok": {"pl": "OK", "en": "OK"},
    "check.fail": {"pl": "BŁĄD", "en": "FAIL"},
    "serve.ready": {
        "pl": "mailsvc przyjmuje pocztę na {host}:{port} (Ctrl-C kończy)",
        "en": "mailsvc accepting mail on {host}:{port} (Ctrl-C stops)",
    },
    "run.try": {
        "pl": (
            "\nGotowe. Spróbuj w drugim terminalu:\n"
            "  {send}\n"
            "Skrzynka radnego przez IMAP: {imap_host}:{imap_port} (bez TLS, tylko lokalnie)\n"
            "  login: {login}\n  hasło: {password}\n"
            "  {read}\n"
        ),
        "en": (
            "\nReady. Try from another shell:\n"
            "  {send}\n"
            "The councillor's mailbox over IMAP: {imap_host}:{imap_port} (no TLS, local only)\n"
            "  login: {login}\n  password: {password}\n"
            "  {read}\n"
        ),
    },
    "sendmail.sent": {"pl": "Wysłano: {reply}", "en": "Sent: {reply}"},
    "mailbox.empty": {"pl": "Skrzynka jest pusta.", "en": "The mailbox is empty."},
}


def text(language: str, key: str, **values: Any) -> str:
    entry = MESSAGES[key]
    return (entry.get(language) or entry["en"]).format(**values)
