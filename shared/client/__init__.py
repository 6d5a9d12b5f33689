"""The client side of sluice: the HTTP API client and what every `sluice` client command shares.

No service package is imported here and none imports another's commands: each service's
`commands.py` builds on this package, and they meet the services only through the HTTP API.
"""
