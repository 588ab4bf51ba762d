"""`python -m kag.cli` runs the kag command line."""

from kag.cli import main

main()
