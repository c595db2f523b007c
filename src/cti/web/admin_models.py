"""Request and response models of the admin page's user management (`web/admin_routes.py`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from cti.web.api import RequestModel, ResponseModel

Name = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z]+/[^\s,;|]{1,120}$")]


class NewUser(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {
        "username": "'username' is 1 to 64 of letters, digits, '.', '_', '-'",
        "password": "'password' needs at least 8 characters",
        "role": "'role' is agent, supervisor or admin",
        "interfaces": "each interface is TECH/resource (PJSIP/1001, Local/agent1@agents/n)",
        "devices": "each device is TECH/resource (PJSIP/1001)",
    }
    username: Name
    password: Password
    role: Literal["agent", "supervisor", "admin"] = "agent"
    display_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=120)] | None = None
    language: Literal["fr", "en"] = "fr"
    interfaces: list[Phone] = Field(default_factory=list, max_length=8)
    devices: list[Phone] = Field(default_factory=list, max_length=8)


class NewPassword(RequestModel):
    MESSAGES: ClassVar[dict[str, str]] = {"password": "'password' needs at least 8 characters"}
    password: Password


class UserRow(ResponseModel):
    username: str
    display_name: str
    role: Literal["agent", "supervisor", "admin"]
    language: str
    interfaces: list[str]
    devices: list[str]
    active: bool
    sessions: int
    last_login: str | None


class UserRows(ResponseModel):
    users: list[UserRow]
