"""``python -m lifecycle_probe.emulator HANDLER ...``: the ``emulate`` command."""

from lifecycle_probe.emulator.cli import main

raise SystemExit(main())
