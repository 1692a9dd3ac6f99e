"""``python -m mtlssl <stage> [overrides]``: the same as the ``mtlssl`` command."""

from mtlssl.cli import main

main()
