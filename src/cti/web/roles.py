"""Who may do what: the three roles, lowest first (a role has every right of the ones before).

Kept apart from `auth` so that the command line can offer them without loading the password
hasher and the database layer.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["agent", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("agent", "supervisor", "admin")
