"""Score detected demand spikes against the generator's injected ones, at an hourly grain.

A truth hour is a rising hour of an injected spike: (product, country, hour). A detected hour is
any hour from a detected spike's start to its last rising hour. Precision is the share of detected
hours that are truth hours, recall the share of truth hours detected.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def hours_of(start: datetime, last: datetime) -> list[datetime]:
    count = int((last - start) / timedelta(hours=1)) + 1
    return [start + timedelta(hours=i) for i in range(count)]


def score(
    truth_hours: list[tuple[str, str, datetime]], detected: list[tuple[str, str, datetime, datetime]]
) -> dict:
    """truth_hours: (product, country, hour) of rise phases; detected: (product, country, start, last)."""
    truth = {(p, c, h.replace(tzinfo=None)) for p, c, h in truth_hours}
    found = {(p, c, h.replace(tzinfo=None)) for p, c, s, last in detected for h in hours_of(s, last)}
    hit = truth & found
    truth_spikes = {(p, c) for p, c, _ in truth}
    return {
        "truth_hours": len(truth),
        "detected_hours": len(found),
        "matched_hours": len(hit),
        "precision": len(hit) / len(found) if found else 1.0,
        "recall": len(hit) / len(truth) if truth else 1.0,
        "detected_spikes": len(detected),
        "truth_spikes_touched": len({(p, c) for p, c, _ in hit}),
        "truth_spikes": len(truth_spikes),
    }
