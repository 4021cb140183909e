"""``python -m twin ...``: the ``twin`` command without its console script."""

from twin.cli import main

raise SystemExit(main())
