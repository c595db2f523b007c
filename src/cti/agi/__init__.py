"""FastAGI: the daemon answers the inbound dialplan's `AGI(agi://HOST[:PORT]/lookup,...)` itself.

`protocol.py` is the wire without I/O, `server.py` the asyncio server, `lookup.py` the caller
lookup route (docs/asterisk.md, "The AGI lookup")."""
