"""The translator's embedded default corpus: English number and date expressions with their French,
German and Spanish renderings, generated offline from `num2words` (cardinal numbers) and `babel`
(CLDR's date formats). Real language data, including its irregular corners and reordering:

    ninety-seven                    quatre-vingt-dix-sept        siebenundneunzig
    seventy-one                     soixante et onze             einundsiebzig
    Wednesday, May 9, 2018          mercredi 9 mai 2018          Mittwoch, 9. Mai 2018
    May 9, 2018                     9 mai 2018                   9. Mai 2018

Numbers cover 0..999,999 with every magnitude equally likely (a uniform draw would make nearly all
of them six-digit numbers); dates cover 1900-2099 in CLDR's "full" and "long" formats. Tens of
thousands of pairs take a few seconds. German writes numerals as one word
("neunhundertneunundneunzigtausend..."), so German text is tokenised into characters.
"""

import datetime

import numpy as np

LANGUAGES = ("en", "fr", "de", "es")
PAIRS = ("en-fr", "en-de", "en-es", "fr-en", "de-en", "es-en")
DEFAULT_PAIR = "en-fr"
DEFAULT_SIZE = 20_000  # pairs
NUMBER_SHARE = 0.5  # the rest are dates
MAX_DIGITS = 6
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
DATE_FORMATS = ("full", "long")
CORPUS_SEED = 97
SPLIT_BY_LANGUAGE = {"de": "character"}  # the others: words


def parse_pair(pair: str) -> tuple[str, str]:
    from pipelines import DataError

    if pair not in PAIRS:
        raise DataError(f"--pair {pair}: choose from {', '.join(PAIRS)}")
    source, target = pair.split("-")
    return source, target


def token_split(language: str) -> str:
    return SPLIT_BY_LANGUAGE.get(language, "word")


def render_number(number: int, language: str) -> str:
    from num2words import num2words

    return num2words(int(number), lang=language)


def render_date(day: datetime.date, language: str, date_format: str) -> str:
    from babel.dates import format_date

    return format_date(day, format=date_format, locale=language)


def generate(pair: str = DEFAULT_PAIR, size: int = DEFAULT_SIZE,
             seed: int = CORPUS_SEED) -> list[tuple[str, str]]:
    """`size` distinct (source, target) pairs for `pair` ("en-fr", "de-en", ...), reproducibly."""
    source, target = parse_pair(pair)
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    pairs = []
    span = (LAST_DAY - FIRST_DAY).days + 1
    while len(pairs) < size:
        if rng.random() < NUMBER_SHARE:
            digits = int(rng.integers(1, MAX_DIGITS + 1))
            low = 0 if digits == 1 else 10 ** (digits - 1)
            number = int(rng.integers(low, 10**digits))
            key = f"n{number}"
            if key in seen:
                continue
            texts = (render_number(number, source), render_number(number, target))
        else:
            day = FIRST_DAY + datetime.timedelta(days=int(rng.integers(span)))
            date_format = DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))]
            key = f"d{day.isoformat()}{date_format}"
            if key in seen:
                continue
            texts = (render_date(day, source, date_format), render_date(day, target, date_format))
        seen.add(key)
        pairs.append(texts)
    return pairs
