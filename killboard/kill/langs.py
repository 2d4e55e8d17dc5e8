"""Names in the languages a client asks for: `lang=en` or `lang=de,en` keeps only those keys
in every translation object of a kill, the rest of the killmail's shape unchanged."""

from __future__ import annotations

from typing import Any

from .staticdata import LANGUAGES

_KNOWN = frozenset(LANGUAGES)

# What a socket or request wants: None = every language (today's full object), else the codes.
Langs = tuple[str, ...] | None


class BadLang(ValueError):
    pass


def parse_langs(raw: str | None) -> Langs:
    """`lang` as given in a query string -> a canonical tuple (in LANGUAGES order, so `en,de`
    and `de,en` share one variant), or None when absent. BadLang names what was wrong."""
    if raw is None:
        return None
    codes = {code.strip().lower() for code in raw.split(",") if code.strip()}
    if not codes:
        raise BadLang(f"lang: give one or more of {', '.join(LANGUAGES)} (comma separated)")
    unknown = sorted(codes - _KNOWN)
    if unknown:
        shown = ", ".join(repr(u[:16]) for u in unknown[:3])
        raise BadLang(f"lang: unknown language {shown}; the languages are {', '.join(LANGUAGES)}")
    if codes == _KNOWN:
        return None  # all eight: the full object
    return tuple(code for code in LANGUAGES if code in codes)


def covering(langs: Langs) -> Langs:
    """The canonical variant that covers `langs`: what a socket that asked for `langs` is sent.

    A live kill is built once per variant, and 254 sockets each asking for another subset of the
    eight languages must not make 254 variants of it (issue 22): English alone, English with one
    other language, or every language (None) — nine variants at most. A client gets names in at
    least the languages it asked for, perhaps more."""
    if langs is None or langs == ("en",):
        return langs
    others = [code for code in langs if code != "en"]
    if len(others) == 1:
        return tuple(code for code in LANGUAGES if code in ("en", others[0]))
    return None


# Where a killmail (killboard/kill/enrich.py) has translation objects, and where it nests parties and
# items that have more: only these are walked, not every value of the kill.
NAME_FIELDS = ("name", "group_name", "ship_name", "ship_group_name", "weapon_type_name", "region_name")
_NESTED = ("victim", "attackers", "items")


def reader_language(accept_language: str) -> str:
    """The page's language for a browser's Accept-Language (`de-DE,de;q=0.9,en;q=0.8`): the
    most wanted of ours by its primary tag, else English. feed.js does the same with
    navigator.languages, the list this header is made from."""
    ranked: list[tuple[float, int, str]] = []
    for i, entry in enumerate(accept_language.split(",")):
        tag, _, params = entry.partition(";")
        code = tag.strip().lower().split("-")[0]
        try:
            q = float(params.strip().removeprefix("q=")) if params.strip().startswith("q=") else 1.0
        except ValueError:
            continue
        if code in _KNOWN and q > 0:
            ranked.append((-q, i, code))
    return min(ranked)[2] if ranked else "en"


def filter_names(kill: Any, langs: tuple[str, ...]) -> Any:
    """A copy of the decoded kill with each translation object cut down to `langs` (the
    original is left as it is, so one decode serves every language variant).

    Names in languages other than English exist only where the static data has them: a name
    missing every asked language keeps its English one, so a client never finds a name object
    empty where it had one."""
    if isinstance(kill, list):
        return [filter_names(part, langs) for part in kill]
    if not isinstance(kill, dict):
        return kill
    out = dict(kill)
    for key in NAME_FIELDS:
        names = out.get(key)
        if isinstance(names, dict) and "en" in names:
            out[key] = {code: names[code] for code in langs if code in names} or {"en": names["en"]}
    for key in _NESTED:
        part = out.get(key)
        if part:
            out[key] = filter_names(part, langs)
    return out
