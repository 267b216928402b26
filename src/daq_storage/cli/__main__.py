"""``python -m daq_storage.cli``: the ``daq-storage`` command."""

from daq_storage.cli import main

main()
