"""The callee's time zones, from the number (or the contact's own `timezone` column).

`phonenumbers.timezone.time_zones_for_number` is the starting point, checked against reality for
every country we ship rules for (docs/dialer.md, "Time zones"); where it is wrong we correct it:

- Morocco: it answers `Atlantic/Canary`, which follows the EU's summer time. Morocco is on UTC+1
  all year except around Ramadan (UTC+0): `Africa/Casablanca`. In winter the two differ by an
  hour, enough to ring a Moroccan at 20:30 when the window closes at 19:30.
- Réunion and Mayotte mobiles (+262 69x / +262 639): it answers both islands' zones, an hour
  apart; `region_code_for_number` tells them apart, so each gets its own zone. Every other French
  overseas region has one zone; we map the region code straight to it. Where the number cannot
  tell the territory (a 0690 mobile is Guadeloupe's, Saint-Martin's or Saint-Barthélemy's), the
  contact's `country`, when it is one of them, says which.
- National numbers are read in the French plan when the region is a French territory: 0692 16 97
  86 is +262 692 16 97 86 (`cti.directory.numbers.overseas_e164`), as dialled from anywhere in
  France.
- North American area codes that straddle a zone line answer one zone (depending on the exchange)
  where the area code covers two or more, e.g. 850 (Florida panhandle: Eastern and Central), 270,
  812, 906, 541, 308, 867 (Yukon, NWT and Nunavut: four zones), 807, 418, 250: we use every zone
  the area code covers, so a call is placed only when it is allowed in all of them.
- 907 (Alaska): some exchanges answer `Pacific/Honolulu` (no summer time) for the Aleutians,
  whose zone is `America/Adak` (Hawaii-Aleutian *with* summer time).
- Non-geographic numbers (toll-free, personal) and unknown prefixes answer every NANP zone or
  `Etc/Unknown`: we use the country's own zones instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers.timezone import time_zones_for_number

from cti.directory.numbers import FRENCH_PLAN_REGIONS, overseas_e164, regions_of

UNKNOWN_ZONE = "Etc/Unknown"

# Regions with a single zone: the region code decides, whatever the prefix data says.
REGION_ZONE: dict[str, str] = {
    "FR": "Europe/Paris",
    "MC": "Europe/Monaco",
    "GP": "America/Guadeloupe",
    "BL": "America/St_Barthelemy",
    "MF": "America/Marigot",
    "MQ": "America/Martinique",
    "GF": "America/Cayenne",
    "RE": "Indian/Reunion",
    "YT": "Indian/Mayotte",
    "PM": "America/Miquelon",
    "MA": "Africa/Casablanca",
    "EH": "Africa/El_Aaiun",
}

# Every zone a country's consumers may be in: used when the number says nothing more precise.
COUNTRY_ZONES: dict[str, tuple[str, ...]] = {
    **{region: (zone,) for region, zone in REGION_ZONE.items()},
    "US": (
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Phoenix",
        "America/Los_Angeles",
        "America/Anchorage",
        "America/Adak",
        "Pacific/Honolulu",
    ),
    "CA": (
        "America/St_Johns",
        "America/Halifax",
        "America/Toronto",
        "America/Winnipeg",
        "America/Regina",
        "America/Edmonton",
        "America/Vancouver",
        "America/Whitehorse",
    ),
}

_EASTERN, _CENTRAL, _MOUNTAIN, _PACIFIC = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
)
# NANP area codes whose territory straddles a zone line: every zone they cover.
AREA_CODE_ZONES: dict[str, tuple[str, ...]] = {
    # United States
    "850": (_EASTERN, _CENTRAL),  # Florida panhandle: Tallahassee / Pensacola
    "812": (_EASTERN, _CENTRAL),  # southern Indiana: Evansville is Central
    "930": (_EASTERN, _CENTRAL),  # overlay of 812
    "219": (_EASTERN, _CENTRAL),  # NW Indiana (Gary) is Central
    "574": (_EASTERN, _CENTRAL),  # northern Indiana: Starke County is Central
    "270": (_EASTERN, _CENTRAL),  # western Kentucky, mostly Central
    "364": (_EASTERN, _CENTRAL),  # overlay of 270
    "423": (_EASTERN, _CENTRAL),  # east Tennessee, a few Central counties
    "931": (_EASTERN, _CENTRAL),  # middle Tennessee, a few Eastern counties
    "906": (_EASTERN, _CENTRAL),  # Michigan's Upper Peninsula: four Central counties
    "308": (_CENTRAL, _MOUNTAIN),  # western Nebraska
    "605": (_CENTRAL, _MOUNTAIN),  # South Dakota
    "701": (_CENTRAL, _MOUNTAIN),  # North Dakota
    "785": (_CENTRAL, _MOUNTAIN),  # northern Kansas: four Mountain counties
    "620": (_CENTRAL, _MOUNTAIN),  # southern Kansas: Hamilton County is Mountain
    "432": (_CENTRAL, _MOUNTAIN),  # west Texas: Hudspeth and Culberson are Mountain
    "915": (_MOUNTAIN,),  # El Paso
    "208": (_MOUNTAIN, _PACIFIC),  # Idaho: the panhandle is Pacific
    "986": (_MOUNTAIN, _PACIFIC),
    "541": (_PACIFIC, _MOUNTAIN),  # Oregon: Malheur County is Mountain
    "458": (_PACIFIC, _MOUNTAIN),
    "775": (_PACIFIC, _MOUNTAIN),  # Nevada: West Wendover is Mountain
    "928": ("America/Phoenix", _MOUNTAIN),  # northern Arizona: the Navajo Nation keeps summer time
    "907": ("America/Anchorage", "America/Adak"),  # Alaska and the Aleutians
    # Canada
    "867": ("America/Whitehorse", "America/Edmonton", "America/Winnipeg", "America/Toronto"),
    "807": ("America/Toronto", "America/Winnipeg"),  # NW Ontario: Kenora is Central
    "418": ("America/Toronto", "America/Halifax"),  # Magdalen Islands, Lower North Shore
    "581": ("America/Toronto", "America/Halifax"),
    "367": ("America/Toronto", "America/Halifax"),
    "250": ("America/Vancouver", "America/Edmonton", "America/Dawson_Creek"),  # Kootenays, Peace River
    "778": ("America/Vancouver", "America/Edmonton", "America/Dawson_Creek"),
    "236": ("America/Vancouver", "America/Edmonton", "America/Dawson_Creek"),
    "672": ("America/Vancouver", "America/Edmonton", "America/Dawson_Creek"),
    "257": ("America/Vancouver", "America/Edmonton", "America/Dawson_Creek"),
    "306": ("America/Regina", "America/Edmonton"),  # Lloydminster keeps Alberta's time
    "639": ("America/Regina", "America/Edmonton"),
    "474": ("America/Regina", "America/Edmonton"),
    "709": ("America/St_Johns", "America/Halifax"),  # Labrador is Atlantic
    "879": ("America/St_Johns", "America/Halifax"),
}
# phonenumbers gives a non-geographic NANP number every zone of the plan, Guam's included.
_TOO_MANY = 6


class NumberError(ValueError):
    """The text is not a usable phone number."""


@dataclass(frozen=True, slots=True)
class CalleeZones:
    e164: str
    region: str | None  # ISO region of the number (GP, RE, ... for overseas France)
    zones: tuple[str, ...]  # empty: no zone known, no call
    source: str  # contact / region / area_code / phonenumbers / country
    # Every region the number may be in (a 0690 mobile: GP, BL, MF), `region` first.
    regions: tuple[str, ...] = ()


def parse_number(number: str, region: str | None = None) -> phonenumbers.PhoneNumber:
    """A valid number, or NumberError saying why not. National numbers of a French territory
    are read in the French plan (0692… is La Réunion's +262 692…, +33 is metropolitan only)."""
    french = region is not None and region.upper() in FRENCH_PLAN_REGIONS
    try:
        parsed = phonenumbers.parse(number, "FR" if french else region)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"{number!r} is not a phone number: {exc}") from None
    if parsed.country_code == 33:
        overseas = overseas_e164(phonenumbers.national_significant_number(parsed))
        parsed = parsed if overseas is None else phonenumbers.parse(overseas)
    if not phonenumbers.is_valid_number(parsed):
        raise NumberError(f"{number!r} is not a valid number")
    return parsed


def valid_zone(name: str | None) -> str | None:
    """`name` when it is a zone this machine knows, else None."""
    if not name or name == UNKNOWN_ZONE:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def callee_zones(
    number: str, contact_zone: str | None = None, country: str | None = None, region: str | None = None
) -> CalleeZones:
    """The zones the callee may be in; raises NumberError for a number that cannot be dialled."""
    parsed = parse_number(number, region)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    regions = regions_of(parsed)
    chosen = (country or "").upper()
    if chosen in regions:
        regions = (chosen,)  # the contact's own country picks among the number's regions
    number_region = regions[0] if regions else None
    own = valid_zone(contact_zone)
    if own is not None:
        return CalleeZones(e164, number_region, (own,), "contact", regions)
    zones, source = _zones(e164, number_region)
    if not zones:
        fallback = COUNTRY_ZONES.get((country or number_region or "").upper(), ())
        zones, source = fallback, "country"
    return CalleeZones(e164, number_region, zones, source, regions)


@lru_cache(maxsize=4096)
def _zones(e164: str, region: str | None) -> tuple[tuple[str, ...], str]:
    if region in REGION_ZONE:
        return (REGION_ZONE[region],), "region"
    if e164.startswith("+1") and e164[2:5] in AREA_CODE_ZONES:
        return AREA_CODE_ZONES[e164[2:5]], "area_code"
    found = tuple(z for z in time_zones_for_number(phonenumbers.parse(e164)) if valid_zone(z))
    if not found or len(found) > _TOO_MANY:
        return (), "unknown"
    return tuple(sorted(found)), "phonenumbers"
