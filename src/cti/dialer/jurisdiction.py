"""Which calling-hours rules apply to a number, and whether a campaign may call it at all.

A campaign's rules are one rule set for every contact (`fr`, `ma`, `us`, `ca` or a custom set), or
`auto`: each contact gets the rule set of the country its number is in (the law of the place the
consumer is called in). On top of that, a campaign declares the countries it calls (`countries`,
default: the rule set's own country; `auto`: every country with a rule set) and refuses numbers
elsewhere, and refuses premium-rate and other special numbers unless it allows their type.

Sources for each territory are in docs/dialer.md ("Territories").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cti.dialer.rulesets import BUILTIN, RuleSet, RuleSetError
from cti.dialer.territories import FRENCH_TERRITORIES, GROUPS, expand, label, short_name

AUTO = "auto"
# phonenumbers number types a campaign calls; the others are refused unless allowed by name.
SUBSCRIBER_TYPES = frozenset({"fixed_line", "mobile", "fixed_line_or_mobile", "voip"})
SPECIAL_TYPES: dict[str, str] = {
    "premium_rate": "a premium-rate number",
    "shared_cost": "a shared-cost number",
    "toll_free": "a toll-free (service) number",
    "uan": "a company's universal access number",
    "voicemail": "a voicemail access number",
    "pager": "a pager number",
    "personal_number": "a personal (forwarding) number",
}
# The country of a rule set, when a campaign using it declares no countries.
RULESET_COUNTRY = {"fr": "FR", "ma": "MA", "us": "US", "ca": "CA"}


@dataclass(frozen=True, slots=True)
class CountryRules:
    """Which built-in set `auto` gives a country's numbers, and why."""

    ruleset: str
    why: str


_DROM = (
    "an overseas department: French law applies there as in mainland France (Constitution art. 73), "
    "so art. D.223-9 of the Code de la consommation, in the consumer's own time zone, with {name}'s "
    "public holidays"
)
_COM = (
    "an overseas collectivity where national law applies except in the collectivity's own fields "
    "(CGCT art. {lo}), and consumer law is not one of them: art. D.223-9 of the Code de la "
    "consommation, in the consumer's own time zone, with {name}'s public holidays"
)
_COM_ARTICLE = {"BL": "LO 6213-1", "MF": "LO 6313-1", "PM": "LO 6413-1"}


def _french(region: str) -> CountryRules:
    if region == "FR":
        return CountryRules("fr", "Code de la consommation, art. D.223-9 (L.223-1 ff.)")
    territory = FRENCH_TERRITORIES[region]
    template = _COM if region in _COM_ARTICLE else _DROM
    why = template.format(name=territory.name, lo=_COM_ARTICLE.get(region, ""))
    return CountryRules("fr", f"{territory.name} is {why}")


COUNTRY_RULES: dict[str, CountryRules] = {
    **{region: _french(region) for region in FRENCH_TERRITORIES},
    **{region: CountryRules("ma", "Moroccan call-centre practice, 08:00–19:30") for region in GROUPS["MA"]},
    **{
        region: CountryRules("us", "TCPA, 47 CFR 64.1200(c)(1), and the state's own law where stricter")
        for region in GROUPS["US"]
    },
    "CA": CountryRules("ca", "CRTC Unsolicited Telecommunications Rules, Part III"),
}


@dataclass(frozen=True, slots=True)
class Choice:
    """The rule set a number gets, or why it is not called at all (`refusal`: rule, reason)."""

    ruleset: RuleSet | None
    why: str
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class CampaignRules:
    name: str  # fr, ma, us, ca, auto or a custom set's name
    fixed: RuleSet | None  # None: auto
    declared: tuple[str, ...] | None = None  # the countries the campaign declared (None: default)
    allow_numbers: frozenset[str] = frozenset()  # special number types it calls anyway
    fallback: RuleSet | None = None  # auto: for countries without a rule set (None: refuse)
    allowed: frozenset[str] | None = field(default=None, compare=False)  # regions; None: any

    @property
    def auto(self) -> bool:
        return self.fixed is None

    def countries(self) -> tuple[str, ...] | None:
        """The countries the campaign calls, as declared or by default; None: any country."""
        if self.declared is not None:
            return self.declared
        if self.auto:
            return None if self.fallback is not None else ("FR", "MA", "US", "CA")
        country = RULESET_COUNTRY.get(self.fixed.name if self.fixed else "")
        return None if country is None else (country,)

    def rulesets(self) -> tuple[RuleSet, ...]:
        """Every rule set a contact of the campaign may be judged by."""
        if self.fixed is not None:
            return (self.fixed,)
        names = sorted({c.ruleset for c in COUNTRY_RULES.values()})
        extra = (self.fallback,) if self.fallback is not None else ()
        return tuple(BUILTIN[n] for n in names) + extra

    def special_refusal(self, kind: str) -> str | None:
        """Why a number of this phonenumbers type is not called, or None."""
        if kind in SUBSCRIBER_TYPES or kind in self.allow_numbers:
            return None
        what = SPECIAL_TYPES.get(kind, f"a {kind.replace('_', ' ')} number")
        return f'{what}: not called (allow_numbers = ["{kind}"] calls them)'

    def country_refusal(self, region: str | None) -> str | None:
        """Why a number of `region` is outside the campaign, or None."""
        allowed = self.allowed_regions()
        limited = allowed is not None and not (self.auto and self.declared is None)
        if limited and allowed is not None and (region is None or region not in allowed):
            countries = ", ".join(self.countries() or ())
            return f"{label(region or '??')} number in a campaign limited to {countries}"
        if self.auto and self.fallback is None and (region is None or region not in COUNTRY_RULES):
            return (
                f"{label(region or '??')} number: no calling-hours rule set for "
                f"{short_name(region)} (auto refuses countries without one unless a fallback is set)"
            )
        return None

    def allowed_regions(self) -> frozenset[str] | None:
        if self.allowed is not None:
            return self.allowed
        countries = self.countries()
        return None if countries is None else expand(countries)

    def choose(self, region: str | None) -> Choice:
        """The rule set for a number of `region` (phonenumbers' region code)."""
        refused = self.country_refusal(region)
        if refused is not None:
            return Choice(None, refused, ("country", refused))
        if self.fixed is not None:
            return Choice(self.fixed, f"rule set {self.fixed.name}, applied to every number (not auto)")
        rules = COUNTRY_RULES.get(region or "")
        if rules is not None:
            return Choice(BUILTIN[rules.ruleset], f"auto: {label(region or '')} number: {rules.why}")
        assert self.fallback is not None
        why = f"auto: {label(region or '??')} number, no rule set of its own: fallback {self.fallback.name}"
        return Choice(self.fallback, why)


def make_rules(
    name: str,
    fixed: RuleSet | None,
    countries: list[str] | tuple[str, ...] | str | None = None,
    allow_numbers: list[str] | tuple[str, ...] | str | None = None,
    fallback: str | None = None,
) -> CampaignRules:
    """Checked campaign rules; RuleSetError for an unknown country, number type or fallback."""
    if isinstance(countries, str):
        countries = countries.replace(",", " ").split()
    if isinstance(allow_numbers, str):
        allow_numbers = allow_numbers.replace(",", " ").split()
    declared = None if countries is None else tuple(dict.fromkeys(_country(c) for c in countries))
    kinds = frozenset(str(k).strip().lower() for k in (allow_numbers or ()))
    unknown = sorted(kinds - set(SPECIAL_TYPES))
    if unknown:
        raise RuleSetError(f"allow_numbers: unknown number type {unknown[0]!r} ({', '.join(SPECIAL_TYPES)})")
    fallback_set = _fallback(fallback, fixed)
    rules = CampaignRules(name, fixed, declared, kinds, fallback_set)
    return CampaignRules(name, fixed, declared, kinds, fallback_set, rules.allowed_regions())


def _country(code: object) -> str:
    import phonenumbers

    text = str(code).strip().upper()
    if text not in phonenumbers.SUPPORTED_REGIONS:
        raise RuleSetError(f"countries: {code!r} is not a two-letter country code (FR, MA, US...)")
    return text


def _fallback(name: str | None, fixed: RuleSet | None) -> RuleSet | None:
    if name is None or name == "refuse":
        return None
    if fixed is not None:
        raise RuleSetError("fallback only applies to auto rules")
    if name not in BUILTIN:
        raise RuleSetError(f"fallback {name!r}: use refuse or one of {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name]
