"""``python -m anomalens.cli``."""

from anomalens.cli import main

main()
