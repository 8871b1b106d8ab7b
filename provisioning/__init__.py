"""The council directory: councillor entries, addresses, rosters. Never imports mailsvc."""
