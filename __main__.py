"""`python -m minoots` runs the CLI (node processes are started this way)."""
from minoots.cli import main

main()
