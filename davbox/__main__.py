"""Allow ``python -m davbox``."""

from davbox.cli import main

main()
