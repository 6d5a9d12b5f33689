"""`python -m services.storage_listener`: the same as `sluice run storage-listener`."""

from services.cli import main

if __name__ == "__main__":
    main(["run", "storage-listener"])
