"""`python -m agentry_dev`: the development stack's command line (`agentry_dev.cli`)."""

from .cli import main

main()
