"""User-facing text: Polish by default, English beside it. Keys are stable ids."""

from __future__ import annotations

from typing import Any

MESSAGES: dict[str, dict[str, str]] = {
    "councillor.created": {
        "pl": "Utworzono skrzynkę: {address}\nHasło początkowe: {password}",
        "en": "Mailbox created: {address}\nInitial password: {password}",
    },
    "plan.header": {
        "pl": "Plan dla {path} (kodowanie {encoding}, separator '{delimiter}', wierszy: {rows}):",
        "en": "Plan for {path} (encoding {encoding}, delimiter '{delimiter}', rows: {rows}):",
    },
    "plan.create": {"pl": "utworzenie", "en": "create"},
    "plan.update": {"pl": "zmiana", "en": "update"},
    "plan.disable": {"pl": "wyłączenie", "en": "disable"},
    "plan.unchanged": {"pl": "bez zmian", "en": "unchanged"},
    "import.progress": {"pl": "Zapisywanie", "en": "Applying"},
    "import.invalid": {
        "pl": "Błędnych wierszy: {count}. Nic nie zmieniono. Popraw plik albo użyj --skip-invalid.",
        "en": "{count} invalid rows. Nothing was changed. Fix the file or use --skip-invalid.",
    },
    "import.plan_changed": {
        "pl": (
            "Spis albo katalog zmienił się od podglądu: plan zmian jest inny niż zatwierdzony. "
            "Nic nie zmieniono. Sprawdź nowy podgląd i zatwierdź ponownie."
        ),
        "en": (
            "The roster or the directory changed since the preview: the plan differs from the "
            "one approved. Nothing was changed. Check the new preview and confirm again."
        ),
    },
    "import.dry_run": {
        "pl": "Próba (--dry-run): nic nie zmieniono.",
        "en": "Dry run (--dry-run): nothing was changed.",
    },
    "import.done": {
        "pl": (
            "Gotowe: utworzono {created}, zmieniono {updated}, wyłączono {disabled}, "
            "bez zmian {unchanged}, błędów {errors}."
        ),
        "en": (
            "Done: created {created}, updated {updated}, disabled {disabled}, "
            "unchanged {unchanged}, errors {errors}."
        ),
    },
    "letters.written": {
        "pl": "Zapisano listy z danymi logowania ({count}) do {path}",
        "en": "Wrote credentials letters ({count}) to {path}",
    },
    "password.reset": {
        "pl": "Nowe hasło dla {address}: {password}",
        "en": "New password for {address}: {password}",
    },
    "mandate.ended_now": {
        "pl": "Mandat {address} wygasł {on}: konto wyłączone.",
        "en": "The mandate of {address} ended on {on}: account disabled.",
    },
    "mandate.scheduled": {
        "pl": "Mandat {address} wygaśnie {on}: konto zostanie wtedy wyłączone.",
        "en": "The mandate of {address} ends on {on}: the account will be disabled then.",
    },
    "history.none": {"pl": "Brak historii dla {address}.", "en": "No history for {address}."},
    "status.active": {"pl": "aktywny", "en": "active"},
    "status.disabled": {"pl": "wyłączony", "en": "disabled"},
    "status.removed": {"pl": "usunięty", "en": "removed"},
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
            "Poczta wychodząca (np. potwierdzenia dla mieszkańców) zostaje na miejscu,\n"
            "w var/capture/: {capture}\n"
        ),
        "en": (
            "\nReady. Try from another shell:\n"
            "  {send}\n"
            "The councillor's mailbox over IMAP: {imap_host}:{imap_port} (no TLS, local only)\n"
            "  login: {login}\n  password: {password}\n"
            "  {read}\n"
            "Outgoing mail (e.g. acknowledgements to residents) stays on this machine,\n"
            "in var/capture/: {capture}\n"
        ),
    },
    "relay.stats.header": {
        "pl": f"{'radny/radna':<42} {'wiadomości':>8} {'odpowiedzi':>8} {'mediana czasu':>12}",
        "en": f"{'councillor':<42} {'messages':>8} {'replied':>8} {'median time':>12}",
    },
    "sendmail.sent": {"pl": "Wysłano: {reply}", "en": "Sent: {reply}"},
    "mailbox.empty": {"pl": "Skrzynka jest pusta.", "en": "The mailbox is empty."},
}


def text(language: str, key: str, **values: Any) -> str:
    entry = MESSAGES[key]
    return (entry.get(language) or entry["en"]).format(**values)
