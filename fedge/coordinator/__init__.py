"""The coordinator process: fleet and control services, run manager, state database."""
