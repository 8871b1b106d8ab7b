"""Reports clerks annex to the minutes: receipts matrix, print lists."""
