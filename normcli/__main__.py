"""``python -m normcli``."""
from normcli.cli import run

run()
