"""``python -m fedge.cli`` runs the ``fedge`` command."""

from fedge.cli.main import main

main()
