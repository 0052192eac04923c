"""Time references in a user's message ("last summer", "in 2023", "what did I tell you last
week?"), resolved against the message time to a span of the user's calendar.

Recall uses them on `observed_at`, the time the user said a memory: a question about what
the user *said* then ("what did I tell you last week?") is narrowed to that span; any other
reference ("where did I travel last summer?") boosts memories said in it, because people
often tell of an event some time after it happened. No LLM: a handful of patterns, the
first reference in the message wins. Spans use the user's own time zone (that of the
message time); weeks start on Monday; seasons are the northern meteorological ones
(spring March-May, summer June-August, autumn September-November, winter December-February,
named by the year it starts in).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from engram.memory.engines.base import TimeRange
from engram.state.errors import InvalidInputError

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}  # first month
NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "a couple of": 2,
    "couple of": 2,
    "three": 3,
    "a few": 3,
    "few": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
RECENT_DAYS = 30  # "recently", "lately"

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_SEASON = "|".join(SEASONS)
_NUMBER = "|".join(sorted(NUMBERS, key=len, reverse=True))
_YEAR = r"(?:19[5-9]\d|20\d\d)"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
# Asking about what the user told: the span is what makes a memory relevant.
_SAID = re.compile(
    r"\b(?:tell|told|say|said|mention|mentioned|talk|talked|share|shared|ask|asked)\b", re.I
)


@dataclass(frozen=True)
class TimeReference:
    """A span of time the message refers to, and how recall uses it."""

    span: TimeRange
    phrase: str  # the words that named it
    said: bool  # the message asks what the user said then: narrow, don't just boost


def time_reference(text: str, now: datetime) -> TimeReference | None:
    """The first time reference in `text`, resolved against `now` (aware: the user's
    time zone), or None. References to the future ("next week") are not resolved."""
    if now.tzinfo is None:
        raise ValueError("the message time must be timezone-aware")
    found: list[tuple[int, str, TimeRange]] = []
    for pattern, resolve in _PATTERNS:
        for match in pattern.finditer(text):
            span = resolve(match, now)
            if span is not None:
                found.append((match.start(), match.group(0), span))
    if not found:
        return None
    # The earliest reference; of two at one place, the longer ("March 2023", not "March").
    _, phrase, span = min(found, key=lambda item: (item[0], -len(item[1])))
    return TimeReference(span=span, phrase=phrase.strip(), said=bool(_SAID.search(text)))


# -- calendar helpers ---------------------------------------------------------------------


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> TimeRange:
    start = _midnight(moment)
    return TimeRange(start, _add_days(start, 1))


def _add_days(start: datetime, days: int) -> datetime:
    """Midnight `days` later on the calendar (not 24 h x days: DST days are 23 or 25 h)."""
    return (start.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=start.tzinfo)


def _week(moment: datetime) -> TimeRange:
    monday = _add_days(_midnight(moment), -moment.weekday())
    return TimeRange(monday, _add_days(monday, 7))


def _first_of(year: int, month: int, like: datetime) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return like.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _months(year: int, month: int, count: int, like: datetime) -> TimeRange:
    return TimeRange(_first_of(year, month, like), _first_of(year, month + count, like))


def _year(year: int, like: datetime) -> TimeRange:
    return _months(year, 1, 12, like)


def _season(name: str, year: int, like: datetime) -> TimeRange:
    return _months(year, SEASONS[name.casefold()], 3, like)


def _latest_season(name: str, now: datetime, *, ended: bool) -> TimeRange:
    """The season called `name` that has started (or, `ended`, finished) by `now`."""
    year = now.year
    while True:
        span = _season(name, year, now)
        limit = span.end if ended else span.start
        assert limit is not None
        if limit <= now:
            return span
        year -= 1


def _latest_month(month: int, now: datetime, *, before_this: bool) -> TimeRange:
    """The most recent `month` that has started by `now` (`before_this`: not this one)."""
    year = (
        now.year if month < now.month or (month == now.month and not before_this) else now.year - 1
    )
    return _months(year, month, 1, now)


def _number(word: str) -> int:
    word = " ".join(word.casefold().split())
    return int(word) if word.isdigit() else NUMBERS[word]


# -- patterns -----------------------------------------------------------------------------

Resolver = Callable[[re.Match[str], datetime], TimeRange | None]


def _yesterday(match: re.Match[str], now: datetime) -> TimeRange:
    return _day(_add_days(_midnight(now), -1))


def _this(match: re.Match[str], now: datetime) -> TimeRange | None:
    # "today" / "this week" mostly plan ahead ("what should I cook today?"); only a question
    # about what was said makes them a reference to the past.
    if not _SAID.search(match.string):
        return None
    unit = (match.group("unit") or "today").casefold()
    if unit == "week":
        return _week(now)
    if unit == "month":
        return _months(now.year, now.month, 1, now)
    if unit == "year":
        return _year(now.year, now)
    return _day(now)  # today, this morning, this afternoon, this evening


def _past(match: re.Match[str], now: datetime) -> TimeRange:
    """ "the past week/month/year": the days up to now, not a calendar unit."""
    days = {"week": 7, "month": 30, "year": 365}[match.group("unit").casefold()]
    tomorrow = _add_days(_midnight(now), 1)
    return TimeRange(_add_days(tomorrow, -days - 1), tomorrow)


def _last(match: re.Match[str], now: datetime) -> TimeRange | None:
    unit = match.group("unit").casefold()
    if unit == "night":
        return _day(_add_days(_midnight(now), -1))
    if unit == "week":
        return _week(_add_days(_midnight(now), -7))
    if unit == "weekend":
        monday = _week(now).start
        assert monday is not None
        return TimeRange(_add_days(monday, -2), monday)
    if unit == "month":
        return _months(now.year, now.month - 1, 1, now)
    if unit == "year":
        return _year(now.year - 1, now)
    if unit in SEASONS:
        return _latest_season(unit, now, ended=True)
    return _latest_month(MONTHS[unit], now, before_this=True)


def _this_season(match: re.Match[str], now: datetime) -> TimeRange:
    return _latest_season(match.group("season"), now, ended=False)


def _ago(match: re.Match[str], now: datetime) -> TimeRange:
    count, unit = _number(match.group("count")), match.group("unit").casefold()
    if unit.startswith("day"):
        return _day(_add_days(_midnight(now), -count))
    if unit.startswith("week"):
        return _week(_add_days(_midnight(now), -7 * count))
    if unit.startswith("month"):
        return _months(now.year, now.month - count, 1, now)
    return _year(now.year - count, now)


def _recently(match: re.Match[str], now: datetime) -> TimeRange:
    days = 7 if "other day" in match.group(0).casefold() else RECENT_DAYS
    return TimeRange(_add_days(_midnight(now), -days), _add_days(_midnight(now), 1))


def _season_of_year(match: re.Match[str], now: datetime) -> TimeRange:
    return _season(match.group("season"), int(match.group("year")), now)


def _month_of_year(match: re.Match[str], now: datetime) -> TimeRange:
    return _months(int(match.group("year")), MONTHS[match.group("month").casefold()], 1, now)


def _day_of_month(match: re.Match[str], now: datetime) -> TimeRange | None:
    month = MONTHS[match.group("month").casefold()]
    day = int(re.sub(r"\D", "", match.group("day")))
    year = int(match.group("year")) if match.group("year") else None
    if year is None:
        year = now.year if (month, day) <= (now.month, now.day) else now.year - 1
    try:
        return _day(now.replace(year=year, month=month, day=day))
    except ValueError:  # 31 April
        return None


def _in_month(match: re.Match[str], now: datetime) -> TimeRange:
    return _latest_month(MONTHS[match.group("month").casefold()], now, before_this=False)


def _in_season(match: re.Match[str], now: datetime) -> TimeRange:
    return _latest_season(match.group("season"), now, ended=False)


def _year_reference(match: re.Match[str], now: datetime) -> TimeRange:
    year = _year(int(match.group("year")), now)
    word = (match.group("word") or "").casefold()
    if word == "since":
        return TimeRange(start=year.start)
    if word == "before":
        return TimeRange(end=year.start)
    if word == "after":
        return TimeRange(start=year.end)
    return year


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Most specific first where two could match at the same place ("in March 2023" before
# "in March"); otherwise the earliest reference in the message wins.
_PATTERNS: list[tuple[re.Pattern[str], Resolver]] = [
    (_compile(r"\byesterday\b"), _yesterday),
    (_compile(r"\b(?:(?P<unit>today)|this\s+(?P<part>morning|afternoon|evening))\b"), _this),
    (_compile(r"\bthis\s+(?P<unit>week|month|year)\b"), _this),
    (_compile(r"\b(?:the\s+)?past\s+(?P<unit>week|month|year)\b"), _past),
    (
        _compile(
            rf"\b(?:last|previous)\s+(?P<unit>night|weekend|week|month|year|{_SEASON}|{_MONTH})\b"
        ),
        _last,
    ),
    (_compile(rf"\bthis\s+(?P<season>{_SEASON})\b"), _this_season),
    (
        _compile(rf"\b(?P<count>\d+|{_NUMBER})\s+(?P<unit>days?|weeks?|months?|years?)\s+ago\b"),
        _ago,
    ),
    (_compile(r"\b(?:recently|lately|the\s+other\s+day)\b"), _recently),
    (_compile(rf"\b(?P<season>{_SEASON})\s+(?:of\s+)?(?P<year>{_YEAR})\b"), _season_of_year),
    (
        _compile(
            rf"\b(?P<day>{_DAY})\s+(?:of\s+)?(?P<month>{_MONTH})\b,?(?:\s+(?P<year>{_YEAR})\b)?"
        ),
        _day_of_month,
    ),
    (
        _compile(rf"\b(?P<month>{_MONTH})\s+(?P<day>{_DAY})\b,?(?:\s+(?P<year>{_YEAR})\b)?"),
        _day_of_month,
    ),
    (_compile(rf"\b(?P<month>{_MONTH})\s+(?:of\s+)?(?P<year>{_YEAR})\b"), _month_of_year),
    (
        _compile(
            rf"\b(?:in|during|since|early|late|mid)\s+(?:the\s+)?(?P<month>{_MONTH})\b"
            rf"(?!,?\s+(?:of\s+)?(?:{_YEAR}|{_DAY})\b)"
        ),
        _in_month,
    ),
    (
        _compile(rf"\b(?:in|during)\s+the\s+(?P<season>{_SEASON})\b(?!\s+(?:of\s+)?{_YEAR}\b)"),
        _in_season,
    ),
    (
        _compile(rf"\b(?:(?P<word>in|during|since|before|after)\s+)?(?P<year>{_YEAR})\b"),
        _year_reference,
    ),
]


_PAST = re.compile(
    r"\b(used to|any ?more|no longer|previously|formerly|back then|in the past|before|"
    r"when did|did i|was i|were we|where did)\b",
    re.IGNORECASE,
)


def asks_about_the_past(text: str, now: datetime) -> bool:
    """Whether a message asks about what was true before ("when did I live in Paris?",
    "what did I do last summer?"): then memories no longer true are worth recalling too,
    shown as past."""
    return bool(_PAST.search(text)) or time_reference(text, now) is not None


def as_of_moment(value: str | date | datetime) -> datetime:
    """The moment an "as of" read looks at: a time with its UTC offset as given; a day
    (a `date`, or "2026-03-01") the end of that day in UTC, so that what the store held
    by that evening counts. A time without its offset is refused: it names no moment."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(
                f"as of {value!r}: give a day (2026-03-01) or an ISO time with its UTC "
                "offset (2026-03-01T12:00:00+00:00)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError(
                f"as of {value.isoformat()}: add its UTC offset (e.g. +00:00), or give a day"
            )
        return value
    return datetime.combine(value, time.max, tzinfo=UTC)
