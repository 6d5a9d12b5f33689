"""`python -m services.kafka_listener`: the same as `sluice run kafka-listener`."""

from services.cli import main

if __name__ == "__main__":
    main(["run", "kafka-listener"])
