"""`python -m services.scheduler`: the same as `sluice run scheduler`."""

from services.cli import main

if __name__ == "__main__":
    main(["run", "scheduler"])
