"""``python -m mlserve``."""

from .cli import main

raise SystemExit(main())
