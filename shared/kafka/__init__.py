"""The Kafka intake both listeners share: consumer options, offsets, stall detection."""
