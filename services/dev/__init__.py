"""`sluice dev` and the servers it (and the test suite) starts: nothing here is runtime code.

- `command.py`: `sluice dev` itself: state under `.sluice/`, every service in one process, the
  banner and the stop message.
- `ports.py`: the ports `sluice dev` binds, checked before anything starts.
- `examples.py`: the examples loaded at start and the connections they use.
- `buckets.py`: trigger buckets created in the embedded S3 and wired to the dev queue.
- `servers/`: embedded PostgreSQL, Kafka-protocol broker, S3+SQS and Ceph, as child processes.

Runtime code (`shared/`, `services/<service>/`) never imports this package; the dev package
imports runtime code and wires it from outside. Nothing is imported here, so importing one part
never pulls in the optional dependencies of another.
"""
