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
    "stack.samba": {
        "pl": (
            "katalog Samba AD: {url}  baza {base_dn}\n"
            "  logowanie {principal} ({admin_dn}), hasło: {password}\n"
            "  certyfikat do zaufania (directory.ca_file): {ca_file}"
        ),
        "en": (
            "Samba AD directory: {url}  base {base_dn}\n"
            "  bind as {principal} ({admin_dn}), password: {password}\n"
            "  certificate to trust (directory.ca_file): {ca_file}"
        ),
    },
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
            "{panel}"
            "Poczta wychodząca (np. potwierdzenia dla mieszkańców) zostaje na miejscu,\n"
            "w var/capture/: {capture}\n"
        ),
        "en": (
            "\nReady. Try from another shell:\n"
            "  {send}\n"
            "The councillor's mailbox over IMAP: {imap_host}:{imap_port} (no TLS, local only)\n"
            "  login: {login}\n  password: {password}\n"
            "  {read}\n"
            "{panel}"
            "Outgoing mail (e.g. acknowledgements to residents) stays on this machine,\n"
            "in var/capture/: {capture}\n"
        ),
    },
    "run.panel.created": {
        "pl": (
            "Panel urzędników (WWW): {url}\n"
            "  login: {login}\n  hasło: {password}\n"
            "  (hasło widać tylko teraz; nowe: {reset})\n"
        ),
        "en": (
            "The clerks' panel (web): {url}\n"
            "  login: {login}\n  password: {password}\n"
            "  (the password is shown only now; a new one: {reset})\n"
        ),
    },
    "run.panel.known": {
        "pl": (
            "Panel urzędników (WWW): {url}\n"
            "  login: {login} (hasło pokazano przy tworzeniu konta; nowe: {reset})\n"
        ),
        "en": (
            "The clerks' panel (web): {url}\n"
            "  login: {login} (the password was shown when the account was made; "
            "a new one: {reset})\n"
        ),
    },
    "run.panel.none": {
        "pl": (
            "Panel urzędników (WWW): {url}\n  nikt nie może się zalogować; dodaj urzędnika: {add}\n"
        ),
        "en": "The clerks' panel (web): {url}\n  nobody can sign in; add a clerk: {add}\n",
    },
    "clerks.created": {
        "pl": (
            "Utworzono konto urzędnika: {login} ({name})\n"
            "Hasło początkowe: {password}\nPanel: {url}"
        ),
        "en": (
            "Clerk account created: {login} ({name})\nInitial password: {password}\nPanel: {url}"
        ),
    },
    "clerks.password": {
        "pl": "Nowe hasło urzędnika {login}: {password}",
        "en": "New password of the clerk {login}: {password}",
    },
    "clerks.removed": {
        "pl": (
            "Usunięto konto urzędnika {login}. Otwarta sesja w panelu wygaśnie przy najbliższym "
            "sprawdzeniu (do {minutes} min)."
        ),
        "en": (
            "Clerk account {login} removed. A session open in the panel ends at its next check "
            "(within {minutes} min)."
        ),
    },
    "clerks.removed_councillor": {
        "pl": (
            "{login} nie należy już do grupy urzędników {group}; skrzynka radnego zostaje. "
            "Otwarta sesja w panelu wygaśnie przy najbliższym sprawdzeniu (do {minutes} min)."
        ),
        "en": (
            "{login} is no longer in the clerks group {group}; the councillor's mailbox stays. "
            "A session open in the panel ends at its next check (within {minutes} min)."
        ),
    },
    "clerks.header": {
        "pl": f"{'login':<24} {'imię i nazwisko':<32} {'w grupie':<9} {'konto':<10} rodzaj",
        "en": f"{'login':<24} {'name':<32} {'in group':<9} {'account':<10} kind",
    },
    "clerks.yes": {"pl": "tak", "en": "yes"},
    "clerks.no": {"pl": "nie", "en": "no"},
    "clerks.kind.staff": {"pl": "pracownik", "en": "staff"},
    "clerks.kind.councillor": {"pl": "radny", "en": "councillor"},
    "clerks.none": {
        "pl": 'Brak urzędników. Dodaj: mailsvc clerks add LOGIN --name "Imię Nazwisko"',
        "en": 'No clerks. Add one: mailsvc clerks add LOGIN --name "Given Surname"',
    },
    "clerks.exists": {
        "pl": "Login {login} jest już zajęty ({dn}). Wybierz inny.",
        "en": "The login {login} is taken ({dn}). Choose another.",
    },
    "clerks.taken": {
        "pl": "Adres {address} należy do radnego. Wybierz inny login lub adres (--email).",
        "en": "The address {address} belongs to a councillor. Choose another login or --email.",
    },
    "clerks.not_found": {
        "pl": "Nie ma urzędnika {login} (wszystkich pokazuje: mailsvc clerks list).",
        "en": "There is no clerk {login} (mailsvc clerks list shows them all).",
    },
    "clerks.bad_login": {
        "pl": (
            "Login {login!r}: dozwolone małe litery bez polskich znaków, cyfry, kropka, łącznik "
            "i podkreślenie, do 64 znaków, na początku i końcu litera lub cyfra."
        ),
        "en": (
            "Login {login!r}: lower-case ASCII letters, digits, dot, hyphen and underscore, up "
            "to 64 characters, a letter or digit at both ends."
        ),
    },
    "clerks.bad_name": {
        "pl": "--name: podaj imię i nazwisko (do 200 znaków).",
        "en": "--name: give the name (up to 200 characters).",
    },
    "clerks.bad_email": {
        "pl": "--email {email!r}: oczekiwano adresu w postaci nazwa@domena.",
        "en": "--email {email!r}: expected an address such as name@domain.",
    },
    "clerks.unavailable": {
        "pl": "Katalog użytkowników jest niedostępny ({detail}). Spróbuj ponownie później.",
        "en": "The user directory is unavailable ({detail}). Try again later.",
    },
    "relay.stats.header": {
        "pl": f"{'radny/radna':<42} {'wiadomości':>8} {'odpowiedzi':>8} {'mediana czasu':>12}",
        "en": f"{'councillor':<42} {'messages':>8} {'replied':>8} {'median time':>12}",
    },
    "sendmail.sent": {"pl": "Wysłano: {reply}", "en": "Sent: {reply}"},
    "mailbox.empty": {"pl": "Skrzynka jest pusta.", "en": "The mailbox is empty."},
    "db.upgrade.created": {
        "pl": "Utworzono schemat bazy danych w wersji {head}.",
        "en": "Database schema created at revision {head}.",
    },
    "db.upgrade.current": {
        "pl": "Schemat bazy danych jest aktualny (wersja {head}): nic nie zmieniono.",
        "en": "The database schema is up to date (revision {head}): nothing changed.",
    },
    "db.upgrade.done": {
        "pl": "Zaktualizowano schemat bazy danych z wersji {current} do {head}.",
        "en": "Database schema upgraded from revision {current} to {head}.",
    },
    "db.upgrade.adopted": {
        "pl": (
            "Baza sprzed migracji schematu rozpoznana jako wersja {baseline} i zaktualizowana "
            "do wersji {head}."
        ),
        "en": (
            "Database from before schema migrations recognised as revision {baseline} and "
            "upgraded to revision {head}."
        ),
    },
    "db.status.current": {
        "pl": "Schemat bazy danych: wersja {current}, zgodna z programem.",
        "en": "Database schema: revision {current}, this version's.",
    },
    "db.status.empty": {
        "pl": "Baza danych jest pusta: pierwsze uruchomienie utworzy schemat w wersji {head}.",
        "en": "The database is empty: the first start creates the schema at revision {head}.",
    },
    "db.status.behind": {
        "pl": (
            "Schemat bazy danych: wersja {current}, starsza niż wersja programu ({head}). "
            "Zrób kopię zapasową i uruchom: mailsvc db upgrade"
        ),
        "en": (
            "Database schema: revision {current}, older than this version's ({head}). "
            "Back it up, then run: mailsvc db upgrade"
        ),
    },
    "db.status.unversioned": {
        "pl": (
            "Baza danych sprzed migracji schematu (bez tabeli alembic_version); wersja "
            "programu: {head}. Zrób kopię zapasową i uruchom: mailsvc db upgrade"
        ),
        "en": (
            "Database from before schema migrations (no alembic_version table); this "
            "version's revision: {head}. Back it up, then run: mailsvc db upgrade"
        ),
    },
    "db.status.ahead": {
        "pl": (
            "Schemat bazy danych: wersja {current}, nieznana tej wersji programu (najnowsza "
            "znana: {head}); bazę zaktualizowała nowsza wersja mailsvc."
        ),
        "en": (
            "Database schema: revision {current}, unknown to this version (its newest: "
            "{head}); a newer version of mailsvc upgraded it."
        ),
    },
}


def text(language: str, key: str, **values: Any) -> str:
    entry = MESSAGES[key]
    return (entry.get(language) or entry["en"]).format(**values)
