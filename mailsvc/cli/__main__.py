"""``python -m mailsvc.cli``."""

from mailsvc.cli.main import main

raise SystemExit(main())
