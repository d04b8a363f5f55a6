"""A synthetic card-transaction stream: the fraud app's embedded default data set (offline).

Real card data is private, and the one public set (ULB's `creditcard.csv`) hides its features
behind a PCA. This generator makes transactions a reader can reason about, seeded so that a
split never changes between runs, and fast (30,000 rows in a fraction of a second, numpy only).

Cardholders. Each card has its own habits, drawn once from `seed`:
- a typical amount (log-normal across cards, median about 25) and how much it varies;
- a daily rhythm: purchases cluster around the card's own hour of day (10:00 to 20:00 for
  most, around midnight for the 8% who work nights); 10% of purchases are small (a coffee,
  0.03 to 0.3 times the typical amount), 4% big (3 to 10 times), and 15% come in sprees,
  minutes after the card's previous purchase;
- a favourite mix of merchant categories (a Dirichlet draw over `CATEGORIES`);
- a home: most purchases happen a few km from it (exponential, mean 4 km). Most cards travel
  once, for 2 to 7 days, 100 to 2,000 km away, and shop near their hotel meanwhile (about 3% of
  the purchases): far from home alone does not give fraud away, but a jump of hundreds of km
  from the previous purchase does (the "impossible travel" rule of fraud teams).

Frauds. About `fraud_rate` of the rows follow one of the patterns that card schemes describe:
- card testing: a stolen number is tried with a burst of 3 to 8 small charges (0.5 to 5) at
  online merchants within minutes, before the real spending;
- cash-out: one large amount (3 to 12 times the card's typical) at an odd hour (00:00 to 05:00)
  in electronics or jewellery;
- impossible travel: a cloned card used in person hundreds to thousands of km away, 10 minutes
  to 3 hours after a genuine purchase, in a category the cardholder rarely uses.

Columns. A transaction processor sees the raw event and enriches it from the card's history;
both are columns here (`FEATURES` are what a detector reads):

    time                seconds since the start of the stream (the split goes by it)
    card_id             which card (not a feature: the history features carry what matters)
    merchant_category   index into CATEGORIES (not a feature: category_share carries it)
    amount              in the card's currency (not a feature: amount_ratio carries it)
    hour                local hour of day, 0 to 24
    distance_km         from the cardholder's home to the merchant
    km_from_last        from the merchant of the card's previous transaction
    amount_ratio        amount / the card's typical amount
    seconds_since_last  since the card's previous transaction (capped at a week)
    txns_last_hour      the card's transactions in the hour before this one
    category_share      how much of the card's usual spending goes to this category
    is_fraud            1 for a fraud, 0 for a genuine purchase (the label)
"""

import numpy as np

CATEGORIES = ("grocery", "restaurant", "fuel", "transport", "pharmacy", "clothing", "online",
              "entertainment", "electronics", "jewellery")
ONLINE, ELECTRONICS, JEWELLERY = 6, 8, 9

# The raw amount is not a feature: amount_ratio says the same relative to the card's habit.
FEATURES = ("amount_ratio", "hour", "distance_km", "km_from_last", "seconds_since_last",
            "txns_last_hour", "category_share")
LABEL = "is_fraud"
TIME = "time"
COLUMNS = (TIME, "card_id", "merchant_category", "amount", *FEATURES, LABEL)
# Non-negative and heavy-tailed: the detectors read log(1 + x) of these.
LOG_FEATURES = ("amount_ratio", "distance_km", "km_from_last", "seconds_since_last",
                "txns_last_hour")

DAYS = 90
ROWS_PER_CARD = 40  # the number of cards follows from the number of rows
NIGHT_OWL_CARDS = 0.08  # cards whose owner shops around midnight (night shifts)
SMALL_SHARE, BIG_SHARE = 0.10, 0.04  # of genuine purchases: 0.03-0.3x and 3-10x the typical
SPREE_SHARE = 0.15  # genuine purchases made within half an hour of the card's previous one
TRIP_CARDS = 0.6  # share of cards that travel once (2 to 7 days, 100 to 2,000 km away)
WEEK = 7 * 86_400.0


def generate_transactions(rows: int = 30_000, fraud_rate: float = 0.01,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """About `rows` transactions (frauds included), sorted by time, as {column: array}."""
    rng = np.random.default_rng(seed)
    cards = max(rows // ROWS_PER_CARD, 10)
    # Per-card habits.
    log_typical = rng.normal(np.log(25.0), 0.7, cards)
    log_spread = rng.uniform(0.3, 0.7, cards)
    peak_hour = rng.normal(15.0, 2.5, cards).clip(9.0, 21.0)
    night_owl = rng.random(cards) < NIGHT_OWL_CARDS
    peak_hour = np.where(night_owl, np.mod(rng.normal(0.5, 1.0, cards), 24.0), peak_hour)
    hour_spread = rng.uniform(1.5, 3.5, cards)
    habits = rng.dirichlet(np.full(len(CATEGORIES), 0.6), cards)  # [cards, categories]
    # One trip for some cards: a few days spent far from home (positions are km from home).
    has_trip = rng.random(cards) < TRIP_CARDS
    trip_start = rng.integers(0, DAYS - 7, cards)
    trip_days = rng.integers(2, 8, cards)
    trip_place = _displacement(rng, rng.uniform(100.0, 2_000.0, cards))  # [cards, 2]

    # Genuine purchases.
    normal_rows = int(round(rows * (1.0 - fraud_rate)))
    card = rng.integers(0, cards, normal_rows)
    day = rng.integers(0, DAYS, normal_rows)
    hour = np.mod(rng.normal(peak_hour[card], hour_spread[card]), 24.0)
    category = _sample_rows(rng, habits[card])
    amount = np.exp(rng.normal(log_typical[card], log_spread[card]))
    # Not every purchase is typical: small ones (a coffee, parking) and big ones (a fridge).
    kind = rng.random(normal_rows)
    amount = np.where(kind < SMALL_SHARE, np.exp(log_typical[card]) *
                      rng.uniform(0.03, 0.3, normal_rows), amount)
    amount = np.where(kind > 1.0 - BIG_SHARE, np.exp(log_typical[card]) *
                      rng.uniform(3.0, 10.0, normal_rows), amount)
    travelling = has_trip[card] & (day >= trip_start[card]) & (
        day < trip_start[card] + trip_days[card])
    place = _displacement(rng, rng.exponential(4.0, normal_rows))  # shops near home (or hotel)
    place += np.where(travelling[:, None], trip_place[card], 0.0)
    time = day * 86_400.0 + hour * 3_600.0
    # Sprees: some purchases follow another one of the same card within half an hour, nearby.
    follower = np.flatnonzero(rng.random(normal_rows) < SPREE_SHARE)
    leader = rng.integers(0, normal_rows, len(follower))
    card[follower] = card[leader]
    time[follower] = time[leader] + rng.uniform(60.0, 1_800.0, len(follower))
    place[follower] = place[leader] + _displacement(rng, rng.exponential(1.0, len(follower)))
    category[follower] = _sample_rows(rng, habits[card[follower]])
    amount[follower] = np.exp(rng.normal(log_typical[card[follower]],
                                         log_spread[card[follower]]))
    fraud = np.zeros(normal_rows, dtype=np.int64)
    parts = [(card, np.minimum(time, DAYS * 86_400.0 - 1.0), category, amount, place, fraud)]

    # Frauds: a third of the fraudulent rows for each pattern.
    fraud_rows = rows - normal_rows
    testing_rows = fraud_rows // 3
    bursts = []
    while sum(bursts) < testing_rows:
        bursts.append(int(rng.integers(3, 9)))
    bursts[-1] -= sum(bursts) - testing_rows
    bursts = np.array([b for b in bursts if b > 0])
    burst_card = rng.integers(0, cards, len(bursts))
    burst_start = rng.uniform(0.0, DAYS * 86_400.0 - 3_600.0, len(bursts))
    gaps = rng.uniform(10.0, 120.0, bursts.sum())  # seconds between test charges
    starts = np.repeat(burst_start, bursts)
    offsets = np.concatenate([np.cumsum(g) for g in np.split(gaps, np.cumsum(bursts)[:-1])])
    n = int(bursts.sum())
    parts.append((np.repeat(burst_card, bursts), starts + offsets, np.full(n, ONLINE),
                  rng.uniform(0.5, 5.0, n), _displacement(rng, rng.exponential(300.0, n)),
                  np.ones(n, np.int64)))

    n = (fraud_rows - testing_rows) // 2  # cash-out at odd hours
    c = rng.integers(0, cards, n)
    parts.append((c, rng.integers(0, DAYS, n) * 86_400.0 + rng.uniform(0.0, 5.0, n) * 3_600.0,
                  rng.choice([ELECTRONICS, JEWELLERY], n),
                  np.exp(log_typical[c]) * rng.uniform(3.0, 12.0, n),
                  _displacement(rng, rng.exponential(20.0, n)), np.ones(n, np.int64)))

    # A cloned card used far away, 10 minutes to 3 hours after a genuine purchase: no one
    # travels that fast (a trip's first purchase comes hours or days after the last one).
    n = fraud_rows - testing_rows - n
    genuine = rng.integers(0, normal_rows, n)
    c = card[genuine]
    rare = _sample_rows(rng, (1.0 - habits[c]) ** 8)
    parts.append((c, parts[0][1][genuine] + rng.uniform(600.0, 10_800.0, n),
                  rare, np.exp(rng.normal(log_typical[c] + 0.7, 0.6)),
                  parts[0][4][genuine] + _displacement(rng, rng.uniform(300.0, 3_000.0, n)),
                  np.ones(n, np.int64)))

    card, time, category, amount, place, fraud = (np.concatenate(p) for p in zip(*parts))
    order = np.argsort(time, kind="stable")
    card, time, category, amount, place, fraud = (
        a[order] for a in (card, time, category, amount, place, fraud))

    # History features, from each card's earlier transactions.
    by_card = np.lexsort((time, card))  # card by card, in time order
    key = card[by_card] * (DAYS + 30) * 86_400.0 + time[by_card]  # one increasing axis
    position = np.arange(len(key))
    new_card = np.r_[True, card[by_card][1:] != card[by_card][:-1]]
    since_last = np.where(new_card, WEEK, np.diff(key, prepend=key[0]))
    moved = np.linalg.norm(np.diff(place[by_card], axis=0, prepend=place[by_card][:1]), axis=1)
    last_hour = position - np.searchsorted(key, key - 3_600.0, side="left")
    seconds_since_last = np.empty_like(time)
    txns_last_hour = np.empty_like(time)
    km_from_last = np.empty_like(time)
    km_from_last[by_card] = np.where(new_card, 0.0, moved)
    seconds_since_last[by_card] = np.minimum(since_last, WEEK)
    txns_last_hour[by_card] = last_hour

    return {
        "time": np.round(time, 1),
        "card_id": card,
        "merchant_category": category,
        "amount": np.round(amount, 2),
        "hour": np.round(np.mod(time, 86_400.0) / 3_600.0, 3),
        "distance_km": np.round(np.linalg.norm(place, axis=1), 2),
        "km_from_last": np.round(km_from_last, 2),
        "amount_ratio": np.round(amount / np.exp(log_typical[card]), 4),
        "seconds_since_last": np.round(seconds_since_last, 1),
        "txns_last_hour": txns_last_hour,
        "category_share": np.round(habits[card, category], 4),
        "is_fraud": fraud,
    }


def _displacement(rng: np.random.Generator, km: np.ndarray) -> np.ndarray:
    """Points `km` away from the origin in random directions, [n, 2]."""
    angle = rng.uniform(0.0, 2 * np.pi, len(km))
    return km[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])


def _sample_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category per row of `weights` [rows, categories] (unnormalised), vectorised."""
    cumulative = np.cumsum(weights, axis=1)
    draws = rng.random(len(weights)) * cumulative[:, -1]
    return (cumulative < draws[:, None]).sum(axis=1).clip(0, weights.shape[1] - 1)


def write_csv(path, rows: int = 30_000, fraud_rate: float = 0.01, seed: int = 0) -> None:
    """The generated stream as a CSV file with a header row (what a user's export looks like)."""
    columns = generate_transactions(rows, fraud_rate, seed)
    table = np.column_stack([columns[name].astype(np.float64) for name in COLUMNS])
    integer = {"card_id", "merchant_category", "txns_last_hour", "is_fraud"}
    formats = ["%d" if name in integer else "%.10g" for name in COLUMNS]
    np.savetxt(path, table, delimiter=",", header=",".join(COLUMNS), comments="", fmt=formats)
