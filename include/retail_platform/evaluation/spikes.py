"""Score detected demand spikes against the generator's injected ones, like with like.

Two views, each comparing the same kind of thing on both sides:

* **Hours**: a truth hour is a rising hour of an injected spike, (product, country, hour); a detected
  hour is any hour from a detected spike's start to its last rising hour. Precision is the share of
  detected hours that are truth hours, recall the share of truth hours detected.
* **Episodes**: an injected spike (one episode, by its id) against a detected spike (one episode).
  A detected episode is correct when it shares a product, a country and at least one hour with an
  injected spike's rise; an injected spike is found when some detected episode is correct for it.

With nothing detected, precision is undefined (None), not perfect; with nothing injected, recall is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class InjectedSpike:
    spike_id: int
    product: str
    country: str
    rise_hours: frozenset[datetime]


@dataclass(frozen=True)
class DetectedSpike:
    product: str
    country: str
    start: datetime
    last_rising_hour: datetime

    @property
    def hours(self) -> frozenset[datetime]:
        count = int((self.last_rising_hour - self.start) / timedelta(hours=1)) + 1
        return frozenset(_naive(self.start) + timedelta(hours=i) for i in range(count))


@dataclass(frozen=True)
class SpikeScore:
    truth_hours: int
    detected_hours: int
    matched_hours: int
    hour_precision: float | None
    hour_recall: float | None
    injected_spikes: int
    detected_spikes: int
    correct_detections: int
    injected_found: int
    spike_precision: float | None
    spike_recall: float | None


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def injected_from_truth(spike_hours: Iterable[dict]) -> list[InjectedSpike]:
    """The generator's ground truth rows (spike_id, productCode, country, hour, phase) as spikes."""
    rises: dict[int, tuple[str, str, set]] = {}
    for row in spike_hours:
        if row["phase"] != "rise":
            continue
        entry = rises.setdefault(row["spike_id"], (row["productCode"], row["country"], set()))
        entry[2].add(_naive(row["hour"]))
    return [InjectedSpike(i, p, c, frozenset(h)) for i, (p, c, h) in sorted(rises.items())]


def score(injected: list[InjectedSpike], detected: list[DetectedSpike]) -> SpikeScore:
    truth = {(s.product, s.country, h) for s in injected for h in s.rise_hours}
    found = {(d.product, d.country, h) for d in detected for h in d.hours}
    hit = truth & found

    def matches(d: DetectedSpike, s: InjectedSpike) -> bool:
        return (d.product, d.country) == (s.product, s.country) and bool(d.hours & s.rise_hours)

    correct = [d for d in detected if any(matches(d, s) for s in injected)]
    found_spikes = [s for s in injected if any(matches(d, s) for d in detected)]
    return SpikeScore(
        truth_hours=len(truth),
        detected_hours=len(found),
        matched_hours=len(hit),
        hour_precision=_share(len(hit), len(found)),
        hour_recall=_share(len(hit), len(truth)),
        injected_spikes=len(injected),
        detected_spikes=len(detected),
        correct_detections=len(correct),
        injected_found=len(found_spikes),
        spike_precision=_share(len(correct), len(detected)),
        spike_recall=_share(len(found_spikes), len(injected)),
    )
