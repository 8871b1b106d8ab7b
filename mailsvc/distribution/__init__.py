"""Distribution: session → documents → send → reminders."""
