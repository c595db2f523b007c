"""Where a contact is: the French territories, country names as files spell them, and the place an
address, a department or a country column names.

France is one numbering plan (0 + nine digits everywhere) but nine territories with their own
country codes, time zones and public holidays. A customer file says where a contact lives in a
postal code (97400), a department (974), a territory or country name ("La Réunion", "Maroc"), or
an ISO code (RE, MA); `place_of` reads those cells and `conflict` says when the number is
elsewhere. Nothing is guessed: a number and an address that disagree make the row an error.

Postal codes: the overseas departments use their department number (971xx Guadeloupe, 972xx
Martinique, 973xx Guyane, 974xx La Réunion, 976xx Mayotte) and Saint-Pierre-et-Miquelon 97500;
Saint-Barthélemy (97133) and Saint-Martin (97150) kept Guadeloupe's postal codes when they
became collectivities in 2007 and got the INSEE codes 977 and 978, which some files write too.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Territory:
    code: str  # ISO 3166-1 alpha-2, as phonenumbers names the region
    name: str
    calling_code: int
    zone: str
    department: str | None  # INSEE code
    holidays: str | None  # the `holidays` package's FR subdivision
    status: str


FRANCE = "FR"
_DEPARTMENT, _COLLECTIVITY = "overseas department", "overseas collectivity"
# Every territory of the French numbering plan, where the Code de la consommation applies.
FRENCH_TERRITORIES: dict[str, Territory] = {
    t.code: t
    for t in (
        Territory("FR", "metropolitan France", 33, "Europe/Paris", None, None, "metropolitan France"),
        Territory("GP", "Guadeloupe", 590, "America/Guadeloupe", "971", "971", _DEPARTMENT),
        Territory("MQ", "Martinique", 596, "America/Martinique", "972", "972", _DEPARTMENT),
        Territory("GF", "Guyane", 594, "America/Cayenne", "973", "973", _DEPARTMENT),
        Territory("RE", "La Réunion", 262, "Indian/Reunion", "974", "974", _DEPARTMENT),
        Territory("YT", "Mayotte", 262, "Indian/Mayotte", "976", "976", _DEPARTMENT),
        Territory("PM", "Saint-Pierre-et-Miquelon", 508, "America/Miquelon", "975", "PM", _COLLECTIVITY),
        Territory("BL", "Saint-Barthélemy", 590, "America/St_Barthelemy", "977", "BL", _COLLECTIVITY),
        Territory("MF", "Saint-Martin", 590, "America/Marigot", "978", "MF", _COLLECTIVITY),
    )
}
# Countries made of several phonenumbers regions: the group's code stands for all of them when a
# campaign declares the countries it calls ("FR" is every French territory above).
GROUPS: dict[str, frozenset[str]] = {
    "FR": frozenset(FRENCH_TERRITORIES),
    "US": frozenset({"US", "PR", "VI", "GU", "AS", "MP"}),  # the TCPA applies in the territories too
    "MA": frozenset({"MA", "EH"}),  # +212 numbers of Western Sahara are Morocco's plan
}
_GROUP_OF = {region: group for group, regions in GROUPS.items() for region in regions}

COUNTRY_NAMES: dict[str, str] = {
    "FR": "France",
    "MA": "Morocco",
    "EH": "Western Sahara",
    "US": "United States",
    "CA": "Canada",
    "DE": "Germany",
    "BE": "Belgium",
    "CH": "Switzerland",
    "ES": "Spain",
    "IT": "Italy",
    "GB": "United Kingdom",
    "NC": "New Caledonia",
    "PF": "French Polynesia",
    "WF": "Wallis and Futuna",
    "MC": "Monaco",
}


def group_of(region: str) -> str:
    """The country a region belongs to for the campaign's scope: FR for every French territory."""
    return _GROUP_OF.get(region, region)


def label(region: str) -> str:
    """`RE (La Réunion, France)`, `US (United States)`."""
    territory = FRENCH_TERRITORIES.get(region)
    if territory is not None:
        return "FR (metropolitan France)" if region == FRANCE else f"{region} ({territory.name}, France)"
    name = COUNTRY_NAMES.get(region)
    return f"{region} ({name})" if name else region


def expand(codes: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """Regions a list of declared countries covers (a group stands for its regions)."""
    out: set[str] = set()
    for code in codes:
        out |= GROUPS.get(code, frozenset({code}))
    return frozenset(out)


# ----------------------------------------------------------------------------------- names
@lru_cache(maxsize=4096)
def fold(text: str) -> str:
    """Lower case, no accents, words separated by single spaces: 'Île de la Réunion' → 'ile de la
    reunion', "Côte-d'Ivoire" → 'cote d ivoire'."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.split(r"[^a-z0-9]+", plain)).strip()


# Names as customer files write them (folded). "france" is every French territory at once.
_NAMES: dict[str, str] = {
    "france": "FR*",
    "fr": "FR*",
    "france metropolitaine": "FR",
    "metropole": "FR",
    "corse": "FR",
    "guadeloupe": "GP",
    "martinique": "MQ",
    "guyane": "GF",
    "guyane francaise": "GF",
    "french guiana": "GF",
    "reunion": "RE",
    "la reunion": "RE",
    "ile de la reunion": "RE",
    "mayotte": "YT",
    "saint pierre et miquelon": "PM",
    "st pierre et miquelon": "PM",
    "saint barthelemy": "BL",
    "st barthelemy": "BL",
    "saint barth": "BL",
    "st barth": "BL",
    "saint martin": "MF",
    "st martin": "MF",
    "maroc": "MA",
    "morocco": "MA",
    "royaume du maroc": "MA",
    "etats unis": "US",
    "etats unis d amerique": "US",
    "usa": "US",
    "united states": "US",
    "united states of america": "US",
    "canada": "CA",
    "allemagne": "DE",
    "germany": "DE",
    "belgique": "BE",
    "belgium": "BE",
    "suisse": "CH",
    "switzerland": "CH",
    "espagne": "ES",
    "spain": "ES",
    "italie": "IT",
    "italy": "IT",
    "royaume uni": "GB",
    "united kingdom": "GB",
    "angleterre": "GB",
    "luxembourg": "LU",
    "monaco": "MC",
    "algerie": "DZ",
    "tunisie": "TN",
    "senegal": "SN",
    "cote d ivoire": "CI",
    "portugal": "PT",
    "pays bas": "NL",
    "nouvelle caledonie": "NC",
    "polynesie francaise": "PF",
    "wallis et futuna": "WF",
}
# Names that are also communes of metropolitan France: a country or territory column may say
# them, a free address may not (Saint-Martin is a dozen communes).
_AMBIGUOUS_IN_ADDRESSES = frozenset({"saint martin", "st martin", "corse", "fr"})


def country_code(text: str) -> str | None:
    """The region a country cell names (an ISO code or a name), FR* for 'France' as a whole;
    None when it names nothing we know."""
    key = fold(text)
    if not key:
        return None
    if len(key) == 2 and key.isalpha() and key != "fr":
        return key.upper()
    return _NAMES.get(key)


# ----------------------------------------------------------------------------------- places
@dataclass(frozen=True, slots=True)
class Place:
    """Where the row's own columns put the contact: the regions it may be (one, or every French
    territory for 'France'), and the words that said so, for messages."""

    regions: frozenset[str]
    said: str

    @property
    def one(self) -> str | None:
        return next(iter(self.regions)) if len(self.regions) == 1 else None


def _place(code: str, said: str) -> Place:
    if code == "FR*":
        return Place(GROUPS["FR"], said)
    return Place(GROUPS[code] if code in ("MA", "US") else frozenset({code}), said)


def country_place(text: str) -> Place | None:
    """What a country or territory column says ('La Réunion', 'RE', 'France', 'Maroc')."""
    code = country_code(text)
    if code is None:
        return None
    written = text.strip()
    return _place(code, written if len(written) > 2 else f"{written} ({short_name(code)})")


def department_place(text: str) -> Place | None:
    region = department_region(text)
    return None if region is None else _place(region, f"department {text.strip()} ({short_name(region)})")


_POSTAL = re.compile(r"(?<![0-9])([0-9]{5})(?![0-9])")
_OVERSEAS_POSTAL = {"971": "GP", "972": "MQ", "973": "GF", "974": "RE", "975": "PM", "976": "YT",
                    "977": "BL", "978": "MF", "980": "MC", "986": "WF", "987": "PF", "988": "NC"}  # fmt: skip
_COLLECTIVITY_POSTAL = {"97133": "BL", "97150": "MF"}


@lru_cache(maxsize=4096)
def postal_region(code: str) -> str | None:
    """The territory of a French postal code: 97400 → RE, 97150 → MF, 75011 → FR."""
    if len(code) != 5 or not code.isdigit():
        return None
    if code in _COLLECTIVITY_POSTAL:
        return _COLLECTIVITY_POSTAL[code]
    if code[:3] in _OVERSEAS_POSTAL:
        return _OVERSEAS_POSTAL[code[:3]]
    return FRANCE if "01" <= code[:2] <= "95" else None


def department_region(text: str) -> str | None:
    """The territory of a department code: 974 → RE, 75 → FR, 2A → FR; 977/978 are the INSEE
    codes of Saint-Barthélemy and Saint-Martin."""
    code = text.strip().upper()
    if code in _OVERSEAS_POSTAL:
        return _OVERSEAS_POSTAL[code]
    if code in ("2A", "2B") or (len(code) == 2 and code.isdigit() and "01" <= code <= "95"):
        return FRANCE
    return None


def address_place(text: str, codes: bool = True) -> Place | None:
    """What a free address says: its postal code (the last five-digit group; not read when
    `codes` is false), else a territory or country name standing alone between commas."""
    for code in reversed(_POSTAL.findall(text) if codes else ()):
        region = postal_region(code)
        if region is not None:
            return _place(region, f"{code} ({short_name(region)})")
    for part in reversed(_PARTS.split(text)):
        # A name has no digit and is short: a street line ("12 rue de Paris") is not looked up.
        if len(part) > _LONGEST_NAME or _DIGIT.search(part):
            continue
        key = fold(part)
        if key in _NAMES and key not in _AMBIGUOUS_IN_ADDRESSES:
            return _place(_NAMES[key], part.strip())
    return None


_PARTS = re.compile(r"[,;\n]")
_DIGIT = re.compile(r"[0-9]")
_LONGEST_NAME = 2 * max(len(name) for name in _NAMES)  # room for spaces, accents, punctuation


def combine(places: list[Place]) -> Place | None:
    """One place from the row's columns; PlaceConflict when they disagree among themselves."""
    if not places:
        return None
    current = places[0]
    for other in places[1:]:
        both = current.regions & other.regions
        if not both:
            raise PlaceConflict(f"the row says both {current.said} and {other.said}")
        narrower = other if len(other.regions) < len(current.regions) else current
        current = Place(both, narrower.said)
    return current


class PlaceConflict(ValueError):
    """The row's columns, or its number and its columns, name different territories."""


def short_name(region: str | None) -> str:
    """'La Réunion', 'metropolitan France', 'Morocco'; 'France' for every French territory."""
    if region is None or region == "FR*":
        return "France"
    territory = FRENCH_TERRITORIES.get(region)
    if territory is not None:
        return territory.name
    return COUNTRY_NAMES.get(region, region)


def number_place_conflict(e164: str, regions: tuple[str, ...], place: Place) -> str:
    """Why a number of `regions` (none of them in `place`) cannot be the contact there."""
    where = " / ".join(short_name(r) for r in regions) if regions else "unknown place"
    return f"{e164} is a {where} number but the row says {place.said}: fix the number or the address"


# What the overseas number blocks look like in the national plan, for a message about a number
# in a territory's range that no operator holds (phonenumbers knows every allocated block).
_NATIONAL_HINTS = {"692": "RE", "693": "RE", "639": "YT", "690": "GP", "691": "GP", "696": "MQ",
                   "697": "MQ", "694": "GF", "262": "RE", "263": "RE", "269": "YT", "590": "GP",
                   "596": "MQ", "594": "GF", "508": "PM"}  # fmt: skip


def overseas_hint(significant: str) -> str | None:
    """'0693… numbers are La Réunion's (+262)' for a national number in an overseas range."""
    region = _NATIONAL_HINTS.get(significant[:3])
    if region is None:
        return None
    territory = FRENCH_TERRITORIES[region]
    return f"0{significant[:3]}… numbers are {territory.name}'s (+{territory.calling_code})"
