"""`python -m services.notifier`: the same as `sluice run notifier`."""

from services.cli import main

if __name__ == "__main__":
    main(["run", "notifier"])
