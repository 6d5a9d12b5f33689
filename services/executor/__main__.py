"""`python -m services.executor`: the same as `sluice run executor`."""

from services.cli import main

if __name__ == "__main__":
    main(["run", "executor"])
