"""`python -m agentry_dev`: the development stack's command line (`agentry_dev.stack`)."""

from .stack import main

main()
