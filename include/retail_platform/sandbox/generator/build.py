"""Generate a realistic classicmodels store, deterministically from a seed.

What makes it useful downstream:

* **Hidden tastes.** Every customer has latent preferences over product lines, scales
  and vendors, shifted by a regional (territory) effect; products have a latent quality.
  Purchases follow the line and scale preferences; each purchased (customer, product)
  pair gets one rating from the full affinity plus noise. The latent values are written
  out as ground truth, so a recommender can be scored against what is really there.
* **Injected demand spikes.** A product in a country gets extra orders that rise for
  2–6 hours, then decay. Each spike and its hours are ground truth for spike detection.
* **A calendar that ends now, on request.** ``ends_at`` moves the store's calendar so that its
  data ends at that moment (see ``calendar.py``), and the last spike rises through the last hours:
  a spike happening now. Without it the preset's own dates are kept (the classic preset: the
  published dump's). Either way the store is the same for a seed, apart from the shift.
* **Consistency.** Addresses come from cities with their own states and postal codes;
  ``buyPrice < MSRP``; shipped orders have shipped dates and exactly one payment equal
  to the order total; order numbers increase with time.

All arrays are built with numpy in bulk (the ``prod`` preset has millions of order
lines); each stage draws from its own seeded stream, so a stage's output depends only
on the seed and the stages before it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa

from retail_platform.sandbox.generator import reference as ref
from retail_platform.sandbox.generator.calendar import CalendarShift, naive_utc_seconds
from retail_platform.sandbox.generator.presets import Preset
from retail_platform.sandbox.generator.schema import VARIANTS

STAGES = ("customers", "employees", "products", "tastes", "orders", "spikes", "lines", "status", "ratings")
TASTE_STRENGTH_LINE = 0.9  # how strongly line tastes steer purchases
TASTE_STRENGTH_SCALE = 0.6
RATING_NOISE_SD = 0.6
# Share of ratings at or below 1, 2, 3, 4 stars: thresholds are these quantiles of the noisy score.
RATING_QUANTILES = (0.06, 0.16, 0.40, 0.72)
DEC = pa.decimal128(10, 2)


@dataclass
class GeneratedSource:
    preset: Preset
    seed: int
    variant: str
    tables: dict[str, pa.Table]
    truth: dict[str, pa.Table]
    metadata: dict = field(default_factory=dict)


def generate(
    preset: Preset, seed: int = 42, variant: str = "modern", ends_at: datetime | None = None
) -> GeneratedSource:
    """The store for ``preset`` and ``seed``; with ``ends_at`` (UTC) its calendar is shifted to end
    then, with the last spike still rising in the last hour."""
    if variant not in VARIANTS:
        raise ValueError(f"schema variant must be one of {VARIANTS}, got {variant!r}")
    shift = None if ends_at is None else CalendarShift(preset.end, naive_utc_seconds(ends_at))
    streams = dict(zip(STAGES, np.random.SeedSequence(seed).spawn(len(STAGES)), strict=True))
    rng = {name: np.random.default_rng(s) for name, s in streams.items()}

    employees, reps_by_territory = _employees(rng["employees"], preset)
    customers = _customers(rng["customers"], preset, reps_by_territory)
    products = _products(rng["products"], preset)
    tastes = _tastes(rng["tastes"], customers, products)
    plans = _spike_plans(preset, seed, rising_at_end=shift is not None)
    base = _base_orders(rng["orders"], preset, customers, plans)
    spikes = _spikes(rng["spikes"], preset, customers, products, plans)
    orders = _merge_orders(base, spikes)
    orders["cust_number"] = customers["number"][orders["cust"]]
    lines = _order_lines(rng["lines"], preset, orders, customers, products, tastes, spikes)
    orders = _statuses(rng["status"], preset, orders)
    payments = _payments(rng["status"], preset, orders, lines, products)
    ratings, thresholds = _ratings(rng["ratings"], preset, orders, lines, customers, products, tastes)

    tables = {
        "productlines": _productlines_table(),
        "products": _products_table(products, preset),
        "offices": _offices_table(),
        "employees": employees,
        "customers": _customers_table(customers, orders, preset),
        "orders": _orders_table(orders, preset),
        "orderdetails": _lines_table(lines, orders, products),
        "payments": payments,
        "ratings": ratings.drop_columns(["_affinity"]),
    }
    truth = _truth_tables(customers, products, tastes, ratings, spikes, thresholds)
    if shift is not None:
        tables = {name: shift.table(name, table) for name, table in tables.items()}
        truth = {name: shift.table(name, table) for name, table in truth.items()}
    if variant == "original":
        tables = {name: _drop_modern_columns(name, table) for name, table in tables.items()}
    metadata = {
        "preset": dataclasses.asdict(preset)
        | {"start": preset.start.isoformat(), "end": preset.end.isoformat()},
        "seed": seed,
        "variant": variant,
        "calendar": "preset" if shift is None else shift.describe(),
        "row_counts": {name: table.num_rows for name, table in tables.items()},
        "rating_thresholds": [float(t) for t in thresholds],
        "taste_model": {
            "affinity": "line_pref[c,line] + region_line[territory(c),line] + scale_pref[c,scale]"
            " + vendor_pref[c,vendor] + quality[p]",
            "rating": f"1 + number of thresholds below (affinity + N(0, {RATING_NOISE_SD}))",
            "purchase": f"line ~ softmax({TASTE_STRENGTH_LINE}*(line_pref+region_line) + log line popularity);"
            f" scale ~ softmax({TASTE_STRENGTH_SCALE}*scale_pref + log popularity); product ~ popularity",
        },
        "spike_model": "rise hour i (0-based) adds base*(i+1) orders of the product in the country;"
        " decay hour j adds round(peak*(decay-j)/(decay+1)) (at least 1)",
        "purchase_model": purchase_model(),
    }
    return GeneratedSource(preset, seed, variant, tables, truth, metadata)


def purchase_model() -> dict:
    """How a base order's products are drawn (``_ProductSampler``), as a documented format that a
    reader without this package (the recommender's ceiling) can evaluate from the ground truth."""
    return {
        "format": 1,
        "taste_strength_line": TASTE_STRENGTH_LINE,
        "taste_strength_scale": TASTE_STRENGTH_SCALE,
        "formula": "P(p | c) = P(line(p) | c) * P(scale(p) | c, line(p)) * popularity(p) / G[line(p), scale(p)],"
        " G[l, s] = sum of popularity over the products of line l and scale s",
        "line": "softmax over lines l of taste_strength_line * (line_pref[c, l] + region_line[territory(c), l])"
        " + log(sum over s of G[l, s])",
        "scale": "softmax over scales s with G[l, s] > 0 of taste_strength_scale * scale_pref[c, s] + log G[l, s]",
        "tables": {
            "customer_tastes": "customerNumber, territory, line_pref:<line>, scale_pref:<scale>",
            "region_line_effects": "territory, productLine, effect (region_line)",
            "product_attributes": "productCode, productLine, productScale, popularity",
        },
        "not_modelled": "injected spikes (a few orders of one product in one country) and order-level"
        " sampling without replacement",
    }


# ---------------------------------------------------------------------------------- helpers
def _fill_pattern(rng: np.random.Generator, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "#":
            out.append(str(rng.integers(0, 10)))
        elif ch == "@":
            out.append(chr(ord("A") + int(rng.integers(0, 26))))
        else:
            out.append(ch)
    return "".join(out)


def _gumbel_argmax(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def _rank_within(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """0-based rank of each element within its group, ordered by key."""
    order = np.lexsort((keys, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_lengths = np.diff(np.r_[starts, len(order)])
    ranks_sorted = np.arange(len(order)) - np.repeat(starts, run_lengths)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = ranks_sorted
    return ranks


def _to_datetime64(d: date) -> np.datetime64:
    return np.datetime64(d.isoformat(), "s")


# ---------------------------------------------------------------------------------- people
def _employees(rng, preset: Preset):
    rows = [
        (1002, "Murphy", "Diane", "x5800", "1", None, "President"),
        (1056, "Patterson", "Mary", "x4611", "1", 1002, "VP Sales"),
        (1076, "Firrelli", "Jeff", "x9273", "1", 1002, "VP Marketing"),
        (1088, "Patterson", "William", "x4871", "6", 1056, "Sales Manager (APAC)"),
        (1102, "Bondur", "Gerard", "x5408", "4", 1056, "Sale Manager (EMEA)"),
        (1143, "Bow", "Anthony", "x5428", "1", 1056, "Sales Manager (NA)"),
    ]
    manager = {"NA": 1143, "EMEA": 1102, "APAC": 1088, "Japan": 1088}
    territory_weight = {t: sum(c.weight for c in ref.COUNTRIES if c.territory == t) for t in ref.TERRITORIES}
    total = sum(territory_weight.values())
    counts = {t: max(1, round(preset.sales_reps * w / total)) for t, w in territory_weight.items()}
    reps_by_territory: dict[str, list[int]] = {t: [] for t in ref.TERRITORIES}
    number = 1165
    first_names = ref.FIRST_NAMES["en"] + ref.FIRST_NAMES["fr"] + ref.FIRST_NAMES["ja"]
    last_names = ref.LAST_NAMES["en"] + ref.LAST_NAMES["fr"] + ref.LAST_NAMES["ja"]
    for territory in ref.TERRITORIES:
        offices = ref.OFFICES_BY_TERRITORY[territory]
        for i in range(counts[territory]):
            first = first_names[rng.integers(len(first_names))]
            last = last_names[rng.integers(len(last_names))]
            rows.append(
                (
                    number,
                    last,
                    first,
                    f"x{rng.integers(1000, 10000)}",
                    offices[i % len(offices)],
                    manager[territory],
                    "Sales Rep",
                )
            )
            reps_by_territory[territory].append(number)
            number += int(rng.integers(1, 30))
    emails = []
    seen: set[str] = set()
    for employee_number, last, first, *_ in rows:
        local = (first[0] + last).lower().replace(" ", "").replace("'", "")
        email = f"{local}@classicmodelcars.com"
        if email in seen:
            email = f"{local}{employee_number}@classicmodelcars.com"
        seen.add(email)
        emails.append(email)
    table = pa.table(
        {
            "employeeNumber": pa.array([r[0] for r in rows], pa.int32()),
            "lastName": [r[1] for r in rows],
            "firstName": [r[2] for r in rows],
            "extension": [r[3] for r in rows],
            "email": emails,
            "officeCode": [r[4] for r in rows],
            "reportsTo": pa.array([r[5] for r in rows], pa.int32()),
            "jobTitle": [r[6] for r in rows],
        }
    )
    return table, reps_by_territory


def _customers(rng, preset: Preset, reps_by_territory):
    n = preset.customers
    weights = np.array([c.weight for c in ref.COUNTRIES])
    country_idx = rng.choice(len(ref.COUNTRIES), size=n, p=weights / weights.sum())
    numbers = 103 + np.r_[0, np.cumsum(rng.integers(1, 6, size=n - 1))]
    inactive = np.zeros(n, dtype=bool)
    inactive[rng.choice(n, size=preset.inactive_customers, replace=False)] = True

    names, last, first, phone, addr1, addr2, city, state, postal, rep = ([] for _ in range(10))
    for i in range(n):
        country = ref.COUNTRIES[country_idx[i]]
        city_weights = np.array([c.weight for c in country.cities])
        c = country.cities[rng.choice(len(country.cities), p=city_weights / city_weights.sum())]
        lang = country.names
        first.append(ref.FIRST_NAMES[lang][rng.integers(len(ref.FIRST_NAMES[lang]))])
        last.append(ref.LAST_NAMES[lang][rng.integers(len(ref.LAST_NAMES[lang]))])
        suffix = ref.COMPANY_SUFFIX[rng.integers(len(ref.COMPANY_SUFFIX))]
        name = (
            f"{ref.COMPANY_FIRST[rng.integers(len(ref.COMPANY_FIRST))]} "
            f"{ref.COMPANY_SECOND[rng.integers(len(ref.COMPANY_SECOND))]}{', ' + suffix if suffix else ''}"
        )
        names.append(name[:50])
        phone.append(_fill_pattern(rng, country.phone))
        addr1.append(
            f"{rng.integers(1, 9999)} {ref.STREETS[lang][rng.integers(len(ref.STREETS[lang]))]}"[:50]
        )
        addr2.append(ref.ADDRESS_LINE2[rng.integers(len(ref.ADDRESS_LINE2))] if rng.random() < 0.2 else None)
        city.append(c.name)
        state.append(c.state)
        postal.append(_fill_pattern(rng, c.postal) if c.postal else None)
        reps = reps_by_territory[country.territory]
        rep.append(None if inactive[i] else int(reps[rng.integers(len(reps))]))
    credit = np.clip(np.round(rng.lognormal(np.log(85_000), 0.45, size=n), -2), 10_000, 250_000)
    credit[inactive] = 0
    # Heavy-tailed buying activity: a few customers place many orders.
    activity = rng.lognormal(0, 0.9, size=n)
    activity[inactive] = 0
    return {
        "number": numbers.astype(np.int64),
        "country_idx": country_idx,
        "territory_idx": np.array([ref.TERRITORIES.index(ref.COUNTRIES[i].territory) for i in country_idx]),
        "inactive": inactive,
        "activity": activity,
        "name": names,
        "last": last,
        "first": first,
        "phone": phone,
        "addr1": addr1,
        "addr2": addr2,
        "city": city,
        "state": state,
        "postal": postal,
        "rep": rep,
        "credit_cents": (credit * 100).astype(np.int64),
    }


# ---------------------------------------------------------------------------------- catalog
def _products(rng, preset: Preset):
    lines = list(ref.PRODUCT_LINES)
    shares = np.array([ref.PRODUCT_LINES[line][0] for line in lines], dtype=float)
    raw = shares / shares.sum() * preset.products
    counts = np.floor(raw).astype(int)
    counts = np.maximum(counts, 1)
    while counts.sum() < preset.products:  # largest remainder
        counts[np.argmax(raw - counts)] += 1
    while counts.sum() > preset.products:
        counts[np.argmax(counts)] -= 1
    line_idx = np.repeat(np.arange(len(lines)), counts)
    n = len(line_idx)
    codes: list[str] = []
    seen: set[str] = set()
    scale_idx = np.empty(n, dtype=np.int64)
    names, descriptions = [], []
    for i in range(n):
        line = lines[line_idx[i]]
        _, description, scales, models = ref.PRODUCT_LINES[line]
        scale = scales[rng.integers(len(scales))]
        scale_idx[i] = ref.SCALES.index(scale)
        prefix = "S" + scale.split(":")[1]
        while True:
            code = f"{prefix}_{rng.integers(1000, 10000)}"
            if code not in seen:
                break
        seen.add(code)
        codes.append(code)
        year = int(rng.integers(1900, 1950)) if line == "Vintage Cars" else int(rng.integers(1936, 2006))
        model = models[rng.integers(len(models))]
        edition = ref.EDITIONS[rng.integers(len(ref.EDITIONS))] if n > 150 else ""
        names.append(f"{year} {model}{edition}"[:70])
        descriptions.append(f"{ref.FEATURES[rng.integers(len(ref.FEATURES))]} {description}")
    buy = np.round(rng.uniform(15, 105, size=n), 2)
    msrp = np.round(buy * rng.uniform(1.35, 2.3, size=n), 2)
    return {
        "code": codes,
        "line_idx": line_idx,
        "scale_idx": scale_idx,
        "vendor_idx": rng.integers(0, len(ref.VENDORS), size=n),
        "name": names,
        "description": descriptions,
        "stock": rng.integers(0, 9_999, size=n),
        "buy_cents": np.round(buy * 100).astype(np.int64),
        "msrp_cents": np.round(msrp * 100).astype(np.int64),
        "popularity": rng.lognormal(0, 0.9, size=n),
    }


def _tastes(rng, customers, products):
    return draw_tastes(
        rng,
        len(customers["number"]),
        len(products["code"]),
        len(ref.LINE_NAMES),
        len(ref.SCALES),
        len(ref.VENDORS),
    )


def draw_tastes(rng, n_customers: int, n_products: int, n_lines: int, n_scales: int, n_vendors: int) -> dict:
    """The hidden taste model's parameters (see the module docstring)."""
    return {
        "line_pref": rng.normal(0, 1.0, size=(n_customers, n_lines)),
        "region_line": rng.normal(0, 0.6, size=(len(ref.TERRITORIES), n_lines)),
        "scale_pref": rng.normal(0, 0.6, size=(n_customers, n_scales)),
        "vendor_pref": rng.normal(0, 0.5, size=(n_customers, n_vendors)),
        "quality": rng.normal(0, 0.4, size=n_products),
    }


def ratings_from_affinity(rng, affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1-5 rating per affinity value: affinity plus noise, cut at fixed quantiles."""
    score = affinity + rng.normal(0, RATING_NOISE_SD, size=len(affinity))
    thresholds = np.quantile(score, RATING_QUANTILES) if len(score) else np.zeros(len(RATING_QUANTILES))
    return (1 + np.searchsorted(thresholds, score)).astype(np.int8), thresholds


def affinity_of(customers, products, tastes, cust: np.ndarray, prod: np.ndarray) -> np.ndarray:
    """Noise-free affinity of customer indices to product indices."""
    line = products["line_idx"][prod]
    return (
        tastes["line_pref"][cust, line]
        + tastes["region_line"][customers["territory_idx"][cust], line]
        + tastes["scale_pref"][cust, products["scale_idx"][prod]]
        + tastes["vendor_pref"][cust, products["vendor_idx"][prod]]
        + tastes["quality"][prod]
    )


class _ProductSampler:
    """Draws products for customers: line by taste, then scale by taste, then product by popularity."""

    def __init__(self, customers, products, tastes):
        self.customers, self.tastes = customers, tastes
        n_lines, n_scales = len(ref.LINE_NAMES), len(ref.SCALES)
        pop = products["popularity"]
        group = products["line_idx"] * n_scales + products["scale_idx"]
        group_pop = np.bincount(group, weights=pop, minlength=n_lines * n_scales).reshape(n_lines, n_scales)
        with np.errstate(divide="ignore"):
            self.log_line_pop = np.log(group_pop.sum(axis=1))
            self.log_group_pop = np.log(group_pop)
        self.group_products = {}
        for g in np.unique(group):
            members = np.flatnonzero(group == g)
            cdf = np.cumsum(pop[members])
            self.group_products[int(g)] = (members, cdf / cdf[-1])
        self.n_scales = n_scales

    def draw(self, rng, cust: np.ndarray) -> np.ndarray:
        out = np.empty(len(cust), dtype=np.int64)
        for start in range(0, len(cust), 500_000):
            c = cust[start : start + 500_000]
            terr = self.customers["territory_idx"][c]
            line_logits = TASTE_STRENGTH_LINE * (
                self.tastes["line_pref"][c] + self.tastes["region_line"][terr]
            )
            line = _gumbel_argmax(rng, line_logits + self.log_line_pop)
            scale_logits = TASTE_STRENGTH_SCALE * self.tastes["scale_pref"][c] + self.log_group_pop[line]
            scale = _gumbel_argmax(rng, scale_logits)
            group = line * self.n_scales + scale
            u = rng.random(len(c))
            chosen = np.empty(len(c), dtype=np.int64)
            for g, (members, cdf) in self.group_products.items():
                mask = group == g
                if mask.any():
                    chosen[mask] = members[np.minimum(np.searchsorted(cdf, u[mask]), len(members) - 1)]
            out[start : start + len(c)] = chosen
        return out


# ---------------------------------------------------------------------------------- orders
# Relative order volume by hour of the day (UTC), shared with the top-up of a stale source.
HOUR_WEIGHTS = np.array(
    [
        0.2,
        0.15,
        0.1,
        0.1,
        0.1,
        0.15,
        0.3,
        0.6,
        1.0,
        1.3,
        1.5,
        1.6,
        1.6,
        1.5,
        1.5,
        1.5,
        1.4,
        1.3,
        1.3,
        1.4,
        1.3,
        1.0,
        0.7,
        0.4,
    ]
)


def _base_orders(rng, preset: Preset, customers, plans):
    n_total = preset.orders - sum(sum(plan["orders_per_hour"]) for plan in plans)
    days = (preset.end - preset.start).days + 1
    day_index = np.arange(days)
    weekday = (np.array([preset.start.weekday()]) + day_index) % 7
    day_weight = (1 + 1.2 * day_index / max(days - 1, 1)) * np.where(weekday >= 5, 0.8, 1.0)
    chosen_days = rng.choice(days, size=n_total, p=day_weight / day_weight.sum())
    hours = rng.choice(24, size=n_total, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    seconds = rng.integers(0, 3600, size=n_total)
    ts = _to_datetime64(preset.start) + (chosen_days * 86400 + hours * 3600 + seconds).astype(
        "timedelta64[s]"
    )

    active = np.flatnonzero(~customers["inactive"])
    guaranteed = active[rng.permutation(len(active))][: min(len(active), n_total // 2)]
    weights = customers["activity"][active]
    rest = rng.choice(active, size=n_total - len(guaranteed), p=weights / weights.sum())
    cust = rng.permutation(np.r_[guaranteed, rest])
    return {"ts": ts, "cust": cust.astype(np.int64), "spike": np.full(n_total, -1, dtype=np.int64)}


def _spike_plans(preset: Preset, seed: int, *, rising_at_end: bool = False) -> list[dict]:
    """The spikes' shapes, drawn first so the base orders can make up the preset's exact total.
    ``rising_at_end``: the last spike rises through the calendar's last hours (no decay: the data
    ends before it), strong enough for the warehouse's spike rule (at least 2, 4, 6, 8 orders)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, preset.spikes, preset.orders]))
    plans = []
    for spike_id in range(preset.spikes):
        rise = int(rng.integers(2, 7))
        decay = int(rng.integers(1, 4))
        base = 1 if preset.orders < 5_000 else int(rng.integers(2, 5))
        peak = base * rise
        per_hour = [base * (i + 1) for i in range(rise)]
        per_hour += [max(1, round(peak * (decay - j) / (decay + 1))) for j in range(decay)]
        plans.append(
            {"spike_id": spike_id, "rise": rise, "decay": decay, "base": base, "orders_per_hour": per_hour}
        )
    if rising_at_end and plans:
        last = plans[-1]
        rise, base = max(last["rise"], 4), max(last["base"], 2)
        per_hour = [base * (i + 1) for i in range(rise)]
        plans[-1] = last | {
            "rise": rise,
            "decay": 0,
            "base": base,
            "orders_per_hour": per_hour,
            "at_end": True,
        }
    return plans


def _spikes(rng, preset: Preset, customers, products, plans):
    active = ~customers["inactive"]
    per_country = np.bincount(customers["country_idx"][active], minlength=len(ref.COUNTRIES))
    eligible = np.flatnonzero(per_country >= 3)
    pop = products["popularity"]
    first_day = preset.start + timedelta(days=14)
    span_days = max(1, (preset.end - first_day).days - 2)
    used: set[tuple[int, int, int]] = set()
    rows = []
    order_ts, order_cust, order_spike = [], [], []
    for plan in plans:
        while True:
            country = int(rng.choice(eligible, p=per_country[eligible] / per_country[eligible].sum()))
            product = int(rng.choice(len(pop), p=pop / pop.sum()))
            day = first_day + timedelta(days=int(rng.integers(0, span_days)))
            start = datetime.combine(day, time(int(rng.integers(8, 15))))
            if plan.get("at_end"):  # rising through the calendar's last hour
                start = datetime.combine(preset.end, time(23)) - timedelta(hours=plan["rise"] - 1)
                day = start.date()
            key = (country, product, day.toordinal())
            if key not in used:
                used.add(key)
                break
        candidates = np.flatnonzero(active & (customers["country_idx"] == country))
        for hour_offset, n_orders in enumerate(plan["orders_per_hour"]):
            hour_start = np.datetime64(start, "s") + np.timedelta64(hour_offset * 3600, "s")
            order_ts.append(hour_start + rng.integers(0, 3600, size=n_orders).astype("timedelta64[s]"))
            order_cust.append(rng.choice(candidates, size=n_orders))
            order_spike.append(np.full(n_orders, plan["spike_id"]))
        rows.append(plan | {"country_idx": country, "product": product, "start": start})
    empty_ts = np.array([], dtype="datetime64[s]")
    return {
        "plans": rows,
        "orders": {
            "ts": np.concatenate(order_ts) if order_ts else empty_ts,
            "cust": np.concatenate(order_cust).astype(np.int64) if order_cust else np.array([], np.int64),
            "spike": np.concatenate(order_spike).astype(np.int64) if order_spike else np.array([], np.int64),
        },
    }


def _merge_orders(base, spikes):
    ts = np.r_[base["ts"], spikes["orders"]["ts"]]
    cust = np.r_[base["cust"], spikes["orders"]["cust"]]
    spike = np.r_[base["spike"], spikes["orders"]["spike"]]
    order = np.argsort(ts, kind="stable")  # order numbers increase with time, like an auto-increment
    return {
        "number": 10100 + np.arange(len(ts), dtype=np.int64),
        "ts": ts[order],
        "cust": cust[order],
        "spike": spike[order],
    }


def _lines_per_order(rng, preset: Preset, n_orders: int, n_products: int, fixed_total: int | None):
    cap = min(18, n_products)
    counts = 1 + rng.binomial(cap - 1, 0.48, size=n_orders)
    if fixed_total is not None:
        if not n_orders <= fixed_total <= n_orders * cap:
            raise ValueError(f"cannot spread {fixed_total} order lines over {n_orders} orders")
        while (diff := fixed_total - int(counts.sum())) != 0:
            movable = np.flatnonzero(counts < cap) if diff > 0 else np.flatnonzero(counts > 1)
            pick = rng.choice(movable, size=min(abs(diff), len(movable)), replace=False)
            counts[pick] += 1 if diff > 0 else -1
    return counts


def _order_lines(rng, preset: Preset, orders, customers, products, tastes, spikes):
    n_orders = len(orders["number"])
    n_products = len(products["code"])
    sampler = _ProductSampler(customers, products, tastes)
    is_spike = orders["spike"] >= 0
    spike_products = np.array([p["product"] for p in spikes["plans"]], dtype=np.int64)

    # Spike orders: the spiking product plus 0-3 (0-1 on the small presets) others.
    extra_max = 2 if preset.orders < 5_000 else 4
    wanted = np.where(is_spike, 1 + rng.integers(0, extra_max, size=n_orders), 0)
    base_idx = np.flatnonzero(~is_spike)
    fixed = None if preset.order_lines is None else preset.order_lines - int(wanted.sum())
    wanted[base_idx] = _lines_per_order(rng, preset, len(base_idx), n_products, fixed)

    first = np.where(is_spike, spike_products[np.maximum(orders["spike"], 0)], -1)
    order_of, product_of = [np.flatnonzero(is_spike)], [first[is_spike]]
    have = is_spike.astype(np.int64)
    for attempt in range(7):
        missing = wanted - have
        need = np.flatnonzero(missing > 0)
        if len(need) == 0:
            break
        if attempt == 6:
            raise RuntimeError(f"could not draw enough distinct products for {len(need)} orders")
        draws_per_order = missing[need] + (2 + attempt * 2)
        ord_rep = np.repeat(need, draws_per_order)
        if attempt < 4:
            drawn = sampler.draw(rng, orders["cust"][ord_rep])
        else:  # rare: a customer whose tastes concentrate on a tiny line; fill uniformly
            drawn = rng.integers(0, n_products, size=len(ord_rep))
        order_of.append(ord_rep)
        product_of.append(drawn)
        o, p = np.concatenate(order_of), np.concatenate(product_of)
        key = o * n_products + p
        _, first_pos = np.unique(key, return_index=True)
        keep = np.zeros(len(key), dtype=bool)
        keep[first_pos] = True
        # Keep the earliest draws first so earlier rounds are never displaced.
        o, p = o[keep], p[keep]
        seq = np.flatnonzero(keep)
        rank = _rank_within(o, seq)
        ok = rank < wanted[o]
        order_of, product_of = [o[ok]], [p[ok]]
        have = np.bincount(o[ok], minlength=n_orders)
    o, p = order_of[0], product_of[0]
    sort = np.lexsort((p, o))
    o, p = o[sort], p[sort]
    n = len(o)
    quantity = np.where(rng.random(n) < 0.9, rng.integers(20, 51, size=n), rng.integers(10, 100, size=n))
    price_cents = np.maximum(1, np.round(products["msrp_cents"][p] * rng.uniform(0.72, 1.0, size=n))).astype(
        np.int64
    )
    line_number = 1 + _rank_within(o, rng.random(n))
    return {
        "order": o,
        "product": p,
        "quantity": quantity,
        "price_cents": price_cents,
        "line_number": line_number,
    }


def _statuses(rng, preset: Preset, orders):
    n = len(orders["number"])
    order_date = orders["ts"].astype("datetime64[D]")
    end = np.datetime64(preset.end.isoformat(), "D")
    age = (end - order_date).astype(np.int64)
    statuses = np.array(ref.ORDER_STATUSES)
    # Shipped, Resolved, Cancelled, On Hold, Disputed, In Process
    old = rng.choice(6, size=n, p=[0.93, 0.02, 0.02, 0.01, 0.01, 0.01])
    recent = rng.choice(6, size=n, p=[0.35, 0.0, 0.0, 0.05, 0.0, 0.60])
    status = np.where(age > 14, old, recent)
    ship_days = rng.integers(1, 7, size=n)
    shipped = order_date + ship_days.astype("timedelta64[D]")
    ships = np.isin(status, [0, 1, 4])
    late = ships & (shipped > end)
    status[late] = 5  # not shipped yet by the end of the data: In Process
    ships &= ~late
    comments = np.array(ref.ORDER_COMMENTS, dtype=object)[rng.integers(0, len(ref.ORDER_COMMENTS), size=n)]
    comments[rng.random(n) >= 0.12] = None
    return orders | {
        "date": order_date,
        "required": order_date + rng.integers(6, 15, size=n).astype("timedelta64[D]"),
        "shipped": np.where(ships, shipped, np.datetime64("NaT")),
        "ships": ships,
        "status": statuses[status],
        "comments": comments,
        # When the row last changed: shipment (during office hours) or placement.
        "updated_at": np.where(
            ships,
            shipped.astype("datetime64[us]")
            + rng.integers(8 * 3600 * 10**6, 18 * 3600 * 10**6, size=n).astype("timedelta64[us]"),
            orders["ts"].astype("datetime64[us]") + rng.integers(0, 10**6, size=n).astype("timedelta64[us]"),
        ),
    }


def _payments(rng, preset: Preset, orders, lines, products):
    totals = np.bincount(
        lines["order"], weights=lines["quantity"] * lines["price_cents"], minlength=len(orders["number"])
    )
    paid = np.flatnonzero(orders["ships"])
    n = len(paid)
    end = np.datetime64(preset.end.isoformat(), "D")
    pay_date = np.minimum(orders["shipped"][paid] + rng.integers(0, 21, size=n).astype("timedelta64[D]"), end)
    codes = rng.choice(26 * 26 * 1_000_000, size=n, replace=False)
    letters = codes // 1_000_000
    checks = [
        f"{chr(65 + a // 26)}{chr(65 + a % 26)}{d:06d}"
        for a, d in zip(letters, codes % 1_000_000, strict=True)
    ]
    updated = pay_date.astype("datetime64[us]") + rng.integers(
        8 * 3600 * 10**6, 18 * 3600 * 10**6, size=n
    ).astype("timedelta64[us]")
    table = pa.table(
        {
            "customerNumber": pa.array(orders["cust_number"][paid], pa.int32()),
            "checkNumber": checks,
            "paymentDate": pa.array(pay_date, pa.date32()),
            "amount": _decimal_from_cents(np.round(totals[paid]).astype(np.int64)),
            "updated_at": pa.array(updated, pa.timestamp("us")),
        }
    )
    return table.sort_by([("customerNumber", "ascending"), ("checkNumber", "ascending")])


def _ratings(rng, preset: Preset, orders, lines, customers, products, tastes):
    n_products = len(products["code"])
    cust_of_line = orders["cust"][lines["order"]]
    key = cust_of_line * n_products + lines["product"]
    ts_of_line = orders["ts"][lines["order"]]
    order = np.lexsort((ts_of_line, key))
    key_sorted = key[order]
    first = np.r_[True, key_sorted[1:] != key_sorted[:-1]]
    pairs = key_sorted[first]
    first_ts = ts_of_line[order][first]
    cust, prod = pairs // n_products, pairs % n_products
    affinity = affinity_of(customers, products, tastes, cust, prod)
    rating, thresholds = ratings_from_affinity(rng, affinity)
    end = np.datetime64(f"{preset.end.isoformat()}T23:59:59", "us")
    updated = np.minimum(
        first_ts.astype("datetime64[us]")
        + rng.integers(86400 * 10**6, 10 * 86400 * 10**6, size=len(pairs)).astype("timedelta64[us]"),
        end,
    )
    codes = np.array(products["code"], dtype=object)
    table = pa.table(
        {
            "customerNumber": pa.array(customers["number"][cust], pa.int32()),
            "productCode": pa.array(codes[prod], pa.string()),
            "productRating": pa.array(rating, pa.int8()),
            "updated_at": pa.array(updated, pa.timestamp("us")),
        }
    )
    table = table.append_column("_affinity", pa.array(affinity))
    return table.sort_by([("customerNumber", "ascending"), ("productCode", "ascending")]), thresholds


# ---------------------------------------------------------------------------------- tables
def _productlines_table():
    lines = list(ref.PRODUCT_LINES)
    return pa.table(
        {
            "productLine": lines,
            "textDescription": [ref.PRODUCT_LINES[line][1] for line in lines],
            "htmlDescription": pa.nulls(len(lines), pa.string()),
            "image": pa.nulls(len(lines), pa.binary()),
        }
    )


def _offices_table():
    columns = [
        "officeCode",
        "city",
        "phone",
        "addressLine1",
        "addressLine2",
        "state",
        "country",
        "postalCode",
        "territory",
    ]
    return pa.table({name: [row[i] for row in ref.OFFICES] for i, name in enumerate(columns)})


def _decimal_from_cents(values: np.ndarray) -> pa.Array:
    # Integer cents are exactly DECIMAL(10,2)'s unscaled value: build the 128-bit words directly.
    cents = values.astype(np.int64)
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(DEC, len(cents), [None, pa.py_buffer(words.tobytes())])


def _products_table(products, preset: Preset):
    start = np.datetime64(preset.start.isoformat(), "us")
    n = len(products["code"])
    rng = np.random.default_rng(len(products["code"]))
    updated = start - rng.integers(86400 * 10**6, 90 * 86400 * 10**6, size=n).astype("timedelta64[us]")
    table = pa.table(
        {
            "productCode": products["code"],
            "productName": products["name"],
            "productLine": [ref.LINE_NAMES[i] for i in products["line_idx"]],
            "productScale": [ref.SCALES[i] for i in products["scale_idx"]],
            "productVendor": [ref.VENDORS[i] for i in products["vendor_idx"]],
            "productDescription": products["description"],
            "quantityInStock": pa.array(products["stock"], pa.int16()),
            "buyPrice": _decimal_from_cents(products["buy_cents"]),
            "MSRP": _decimal_from_cents(products["msrp_cents"]),
            "updated_at": pa.array(updated, pa.timestamp("us")),
        }
    )
    return table.sort_by("productCode")


def _customers_table(customers, orders, preset: Preset):
    n = len(customers["number"])
    first_order = np.full(n, np.datetime64(preset.end.isoformat(), "s"))
    np.minimum.at(first_order, orders["cust"], orders["ts"])
    rng = np.random.default_rng(n)
    created = first_order.astype("datetime64[us]") - rng.integers(
        86400 * 10**6, 60 * 86400 * 10**6, size=n
    ).astype("timedelta64[us]")
    return pa.table(
        {
            "customerNumber": pa.array(customers["number"], pa.int32()),
            "customerName": customers["name"],
            "contactLastName": customers["last"],
            "contactFirstName": customers["first"],
            "phone": customers["phone"],
            "addressLine1": customers["addr1"],
            "addressLine2": pa.array(customers["addr2"], pa.string()),
            "city": customers["city"],
            "state": pa.array(customers["state"], pa.string()),
            "postalCode": pa.array(customers["postal"], pa.string()),
            "country": [ref.COUNTRIES[i].name for i in customers["country_idx"]],
            "salesRepEmployeeNumber": pa.array(customers["rep"], pa.int32()),
            "creditLimit": _decimal_from_cents(customers["credit_cents"]),
            "updated_at": pa.array(created, pa.timestamp("us")),
        }
    )


def _orders_table(orders, preset: Preset):
    return pa.table(
        {
            "orderNumber": pa.array(orders["number"], pa.int32()),
            "orderDate": pa.array(orders["date"], pa.date32()),
            "requiredDate": pa.array(orders["required"], pa.date32()),
            "shippedDate": pa.array(orders["shipped"].astype("datetime64[D]"), pa.date32(), from_pandas=True),
            "status": pa.array(orders["status"].tolist(), pa.string()),
            "comments": pa.array(orders["comments"].tolist(), pa.string()),
            "customerNumber": pa.array(orders["cust_number"], pa.int32()),
            "orderTimestamp": pa.array(orders["ts"], pa.timestamp("s")),
            "updated_at": pa.array(orders["updated_at"], pa.timestamp("us")),
        }
    )


def _lines_table(lines, orders, products):
    codes = pa.array(products["code"], pa.string())
    return pa.table(
        {
            "orderNumber": pa.array(orders["number"][lines["order"]], pa.int32()),
            "productCode": codes.take(pa.array(lines["product"])),
            "quantityOrdered": pa.array(lines["quantity"], pa.int32()),
            "priceEach": _decimal_from_cents(lines["price_cents"]),
            "orderLineNumber": pa.array(lines["line_number"], pa.int16()),
            "updated_at": pa.array(orders["ts"][lines["order"]].astype("datetime64[us]"), pa.timestamp("us")),
        }
    )


def _drop_modern_columns(name: str, table: pa.Table) -> pa.Table:
    for column in ("orderTimestamp", "updated_at"):
        if column in table.column_names:
            table = table.drop_columns([column])
    return table


def _truth_tables(customers, products, tastes, ratings, spikes, thresholds):
    lines, scales, vendors = ref.LINE_NAMES, ref.SCALES, ref.VENDORS
    taste_columns = {
        "customerNumber": pa.array(customers["number"], pa.int32()),
        "country": [ref.COUNTRIES[i].name for i in customers["country_idx"]],
        "territory": [ref.TERRITORIES[i] for i in customers["territory_idx"]],
    }
    for j, line in enumerate(lines):
        taste_columns[f"line_pref:{line}"] = tastes["line_pref"][:, j]
    for j, scale in enumerate(scales):
        taste_columns[f"scale_pref:{scale}"] = tastes["scale_pref"][:, j]
    for j, vendor in enumerate(vendors):
        taste_columns[f"vendor_pref:{vendor}"] = tastes["vendor_pref"][:, j]
    region = [
        (territory, line, float(tastes["region_line"][t, j]))
        for t, territory in enumerate(ref.TERRITORIES)
        for j, line in enumerate(lines)
    ]
    spike_rows, hour_rows = [], []
    for plan in spikes["plans"]:
        code, country = products["code"][plan["product"]], ref.COUNTRIES[plan["country_idx"]].name
        spike_rows.append(
            {
                "spike_id": plan["spike_id"],
                "productCode": code,
                "country": country,
                "start_hour": plan["start"],
                "rise_hours": plan["rise"],
                "decay_hours": plan["decay"],
                "base_orders": plan["base"],
                "peak_orders": plan["base"] * plan["rise"],
            }
        )
        for offset, n_orders in enumerate(plan["orders_per_hour"]):
            hour_rows.append(
                {
                    "spike_id": plan["spike_id"],
                    "productCode": code,
                    "country": country,
                    "hour": plan["start"] + timedelta(hours=offset),
                    "phase": "rise" if offset < plan["rise"] else "decay",
                    "injected_orders": n_orders,
                }
            )
    spike_schema = pa.schema(
        [
            ("spike_id", pa.int32()),
            ("productCode", pa.string()),
            ("country", pa.string()),
            ("start_hour", pa.timestamp("s")),
            ("rise_hours", pa.int32()),
            ("decay_hours", pa.int32()),
            ("base_orders", pa.int32()),
            ("peak_orders", pa.int32()),
        ]
    )
    hour_schema = pa.schema(
        [
            ("spike_id", pa.int32()),
            ("productCode", pa.string()),
            ("country", pa.string()),
            ("hour", pa.timestamp("s")),
            ("phase", pa.string()),
            ("injected_orders", pa.int32()),
        ]
    )
    noise_free = 1 + np.searchsorted(thresholds, ratings["_affinity"].to_numpy())
    return {
        "customer_tastes": pa.table(taste_columns),
        "region_line_effects": pa.table(
            {
                "territory": [r[0] for r in region],
                "productLine": [r[1] for r in region],
                "effect": [r[2] for r in region],
            }
        ),
        "product_attributes": pa.table(
            {
                "productCode": products["code"],
                "productLine": [lines[i] for i in products["line_idx"]],
                "productScale": [scales[i] for i in products["scale_idx"]],
                "productVendor": [vendors[i] for i in products["vendor_idx"]],
                "quality": tastes["quality"],
                "popularity": products["popularity"],
            }
        ),
        "ratings_truth": pa.table(
            {
                "customerNumber": ratings["customerNumber"],
                "productCode": ratings["productCode"],
                "affinity": ratings["_affinity"],
                "noise_free_rating": pa.array(noise_free, pa.int8()),
                "productRating": ratings["productRating"],
            }
        ),
        "spikes": pa.Table.from_pylist(spike_rows, schema=spike_schema),
        "spike_hours": pa.Table.from_pylist(hour_rows, schema=hour_schema),
    }
