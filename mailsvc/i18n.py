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
            "  konto usługi {service_dn} (uprawnienia tylko na {units}),\n"
            "    hasło: {service_password}\n"
            "  administrator domeny {principal}, hasło: {password}\n"
            "  certyfikat do zaufania (directory.ca_file): {ca_file}"
        ),
        "en": (
            "Samba AD directory: {url}  base {base_dn}\n"
            "  service account {service_dn} (rights on {units} only),\n"
            "    password: {service_password}\n"
            "  domain administrator {principal}, password: {password}\n"
            "  certificate to trust (directory.ca_file): {ca_file}"
        ),
    },
    "status.running": {"pl": "działa", "en": "running"},
    "status.stopped": {"pl": "zatrzymany", "en": "stopped"},
    "check.ok": {"pl": "OK", "en": "OK"},
    "check.fail": {"pl": "BŁĄD", "en": "FAIL"},
    "check.cert.none": {
        "pl": "nie ustawiono (smtp.tls_cert): serwer nie oferuje STARTTLS",
        "en": "not configured (smtp.tls_cert): the server offers no STARTTLS",
    },
    "check.cert.auto_later": {
        "pl": "auto: certyfikat powstanie przy pierwszym starcie ({path})",
        "en": "auto: the certificate is made at the first start ({path})",
    },
    "check.cert.valid": {
        "pl": "{path}: ważny do {until} (zostało dni: {days})",
        "en": "{path}: valid until {until} ({days} days left)",
    },
    "check.cert.expiring": {
        "pl": "{path}: wygasa {until} (zostało dni: {days}, mniej niż {minimum}) - odnów go",
        "en": "{path}: expires {until} ({days} days left, fewer than {minimum}) - renew it",
    },
    "check.cert.expired": {
        "pl": "{path}: wygasł {until}",
        "en": "{path}: expired on {until}",
    },
    "check.cert.unreadable": {
        "pl": "{path}: nie da się odczytać certyfikatu ({error})",
        "en": "{path}: the certificate cannot be read ({error})",
    },
    "check.dns.ok": {"pl": "{type} {name} opublikowany", "en": "{type} {name} published"},
    "check.dns.missing": {
        "pl": "{type} {name} brak; oczekiwano: {expected}",
        "en": "{type} {name} missing; expected: {expected}",
    },
    "check.dns.different": {
        "pl": "{type} {name} inny: {found}; oczekiwano: {expected}",
        "en": "{type} {name} different: {found}; expected: {expected}",
    },
    "check.dns.unknown": {
        "pl": "{type} {name} nieznany: brak odpowiedzi DNS ({found})",
        "en": "{type} {name} unknown: no DNS answer ({found})",
    },
    "check.dns.no_answer": {
        "pl": "brak odpowiedzi serwera DNS {resolver} ({error}); --no-dns pomija sprawdzenie",
        "en": "no answer from the DNS server {resolver} ({error}); --no-dns skips the check",
    },
    "check.dns.skipped": {
        "pl": "pominięto: {domain} nie istnieje w publicznym DNS",
        "en": "skipped: {domain} is not in public DNS",
    },
    "check.dns.off": {"pl": "pominięto (--no-dns)", "en": "skipped (--no-dns)"},
    "check.disk": {
        "pl": "{path}: wolne {free} z {total} ({percent} %), wymagane co najmniej {minimum}",
        "en": "{path}: {free} free of {total} ({percent} %), at least {minimum} required",
    },
    "check.scheduler.ok": {
        "pl": "zadań: {jobs}, ostatni udany przebieg {ago} temu",
        "en": "{jobs} jobs, last successful run {ago} ago",
    },
    "check.scheduler.never": {
        "pl": "zadania jeszcze nie działały (czy `mailsvc serve` był uruchomiony?)",
        "en": "no job has run yet (has `mailsvc serve` run?)",
    },
    "check.scheduler.stale": {
        "pl": "{job}: ostatni udany przebieg {ago} temu (powinien co {interval})",
        "en": "{job}: last successful run {ago} ago (due every {interval})",
    },
    "check.scheduler.not_run": {
        "pl": "{job}: ani jednego udanego przebiegu",
        "en": "{job}: no successful run",
    },
    "check.scheduler.error": {"pl": "ostatni błąd: {error}", "en": "last error: {error}"},
    "check.leader.sole": {"pl": "jedyny węzeł (SQLite)", "en": "sole node (SQLite)"},
    "check.leader.node": {"pl": "harmonogramem kieruje węzeł {node}", "en": "node {node} leads"},
    "check.leader.none": {
        "pl": "żaden węzeł nie kieruje harmonogramem (czy `mailsvc serve` działa?)",
        "en": "no node leads the scheduler (is `mailsvc serve` running?)",
    },
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
    "clerks.usage": {
        "pl": (
            "Podaj --given-name i --surname (login zostanie z nich utworzony) "
            "albo LOGIN i --name, nie obie formy naraz."
        ),
        "en": (
            "Give --given-name and --surname (the login is made from them) "
            "or LOGIN and --name, not both."
        ),
    },
    "clerks.bad_person": {
        "pl": "Nie można utworzyć loginu z imienia i nazwiska: {detail}",
        "en": "No login can be made from the given name and surname: {detail}",
    },
    "clerks.no_free_login": {
        "pl": "Brak wolnego loginu dla {name}: podaj LOGIN i --name.",
        "en": "No free login for {name}: give LOGIN and --name.",
    },
    "clerks.bad_email": {
        "pl": "--email {email!r}: oczekiwano adresu w postaci nazwa@domena.",
        "en": "--email {email!r}: expected an address such as name@domain.",
    },
    "backup.done": {
        "pl": "Kopia zapasowa zapisana: {path} ({size}, {seconds} s). Zawiera (przed kompresją):",
        "en": "Backup written: {path} ({size}, {seconds} s). It holds (before compression):",
    },
    "backup.database": {
        "pl": "  baza danych ({kind}): {size}",
        "en": "  database ({kind}): {size}",
    },
    "backup.directory": {
        "pl": "  katalog użytkowników ({kind}): wpisów {entries}, {size}",
        "en": "  user directory ({kind}): {entries} entries, {size}",
    },
    "backup.directory.none": {
        "pl": "  katalog użytkowników: NIE zapisany ({note})",
        "en": "  user directory: NOT saved ({note})",
    },
    "backup.part": {
        "pl": "  {label}: plików {files}, {size}",
        "en": "  {label}: {files} files, {size}",
    },
    "backup.label.secrets": {"pl": "klucze i hasła", "en": "keys and secrets"},
    "backup.label.documents": {"pl": "dokumenty sesji", "en": "session documents"},
    "backup.label.spool": {
        "pl": "kolejka (duże treści czekające na doręczenie)",
        "en": "queue (large bodies awaiting delivery)",
    },
    "backup.label.mailboxes": {"pl": "skrzynki pocztowe", "en": "mailboxes"},
    "backup.config": {
        "pl": "  plik konfiguracji (do porównania; restore go nie zastępuje): {path}",
        "en": "  configuration file (for comparison; restore does not replace it): {path}",
    },
    "backup.mailboxes.skipped": {
        "pl": "  skrzynki pocztowe: pominięte (dołącza je --mailboxes)",
        "en": "  mailboxes: left out (--mailboxes includes them)",
    },
    "restore.mailboxes.none": {
        "pl": "  skrzynki pocztowe: nie ma ich w kopii (zrobionej bez --mailboxes)",
        "en": "  mailboxes: not in the backup (made without --mailboxes)",
    },
    "backup.spool.missing": {
        "pl": "  UWAGA: brak plików kolejki, które wskazuje baza ({count}), np. {example}",
        "en": "  WARNING: queue files the database names are missing ({count}), e.g. {example}",
    },
    "backup.private": {
        "pl": "Plik ma prawa 0600: są w nim hasła i klucze. Przechowuj go poza tym serwerem.",
        "en": "The file is mode 0600: it holds passwords and keys. Keep it off this server.",
    },
    "restore.done": {
        "pl": "Odtworzono kopię z {created} do {var_dir} ({seconds} s):",
        "en": "Restored the backup of {created} into {var_dir} ({seconds} s):",
    },
    "restore.database": {
        "pl": "  baza danych ({kind}): {target}",
        "en": "  database ({kind}): {target}",
    },
    "restore.directory": {
        "pl": "  katalog użytkowników ({kind}): wpisów {entries}",
        "en": "  user directory ({kind}): {entries} entries",
    },
    "restore.directory.note": {
        "pl": "  katalog użytkowników: UWAGA: {note}",
        "en": "  user directory: NOTE: {note}",
    },
    "restore.external": {"pl": "  {path}: {status}", "en": "  {path}: {status}"},
    "restore.config": {
        "pl": "  plik konfiguracji z chwili kopii (nieużywany, do porównania): {path}",
        "en": "  configuration file at backup time (not used, for comparison): {path}",
    },
    "restore.next": {
        "pl": "Dalej: mailsvc stack up, potem mailsvc serve (albo uruchom usługę).",
        "en": "Next: mailsvc stack up, then mailsvc serve (or start the service).",
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
