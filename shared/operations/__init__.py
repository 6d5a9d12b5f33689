"""Operations on runs that more than one service performs, each next to its SQL.

Terminating and rerunning instances, reading attempt logs and creating backfills are asked for
through the API, the CLI and the console and carried out by the executor or the scheduler; the
code lives here so that no service imports another (services meet only in PostgreSQL).
"""
