"""The spike scorer the benchmark reports with: like compared with like, and no free precision."""

from __future__ import annotations

from datetime import datetime, timedelta

from retail_platform.evaluation.spikes import DetectedSpike, InjectedSpike, injected_from_truth, score

T0 = datetime(2026, 11, 24, 8)


def hours(start: int, count: int) -> frozenset[datetime]:
    return frozenset(T0 + timedelta(hours=start + i) for i in range(count))


INJECTED = [
    InjectedSpike(1, "A", "France", hours(0, 3)),  # 08-10
    InjectedSpike(2, "A", "France", hours(48, 2)),  # two days later, same product and country
    InjectedSpike(3, "B", "USA", hours(0, 4)),
]


def test_episodes_are_counted_against_episodes_and_hours_against_hours():
    detected = [
        DetectedSpike("A", "France", T0 + timedelta(hours=1), T0 + timedelta(hours=3)),  # 09-11: 2 of 3 hours
        DetectedSpike("C", "Spain", T0, T0 + timedelta(hours=1)),  # nothing injected there
    ]
    result = score(INJECTED, detected)
    # Hours: truth 3 + 2 + 4 = 9; detected 3 + 2 = 5; matched 09, 10 of A.
    assert (result.truth_hours, result.detected_hours, result.matched_hours) == (9, 5, 2)
    assert (result.hour_precision, result.hour_recall) == (2 / 5, 2 / 9)
    # Episodes: three injected spikes (two of them on the same product and country), two detected.
    assert (result.injected_spikes, result.detected_spikes) == (3, 2)
    assert (result.correct_detections, result.injected_found) == (1, 1)
    assert (result.spike_precision, result.spike_recall) == (1 / 2, 1 / 3)


def test_a_detection_of_the_right_pair_at_the_wrong_time_is_not_correct():
    late = [DetectedSpike("A", "France", T0 + timedelta(hours=24), T0 + timedelta(hours=25))]
    result = score(INJECTED, late)
    assert (result.correct_detections, result.injected_found, result.matched_hours) == (0, 0, 0)
    assert result.spike_precision == 0.0 and result.hour_precision == 0.0


def test_detecting_nothing_has_no_precision_rather_than_a_perfect_one():
    result = score(INJECTED, [])
    assert result.hour_precision is None and result.spike_precision is None
    assert result.hour_recall == 0.0 and result.spike_recall == 0.0
    assert score([], []).spike_recall is None


def test_ground_truth_rows_become_one_spike_per_id_with_its_rise_hours_only():
    rows = [
        {"spike_id": 7, "productCode": "A", "country": "France", "hour": T0, "phase": "rise"},
        {
            "spike_id": 7,
            "productCode": "A",
            "country": "France",
            "hour": T0 + timedelta(hours=1),
            "phase": "rise",
        },
        {
            "spike_id": 7,
            "productCode": "A",
            "country": "France",
            "hour": T0 + timedelta(hours=2),
            "phase": "decay",
        },
        {
            "spike_id": 9,
            "productCode": "A",
            "country": "France",
            "hour": T0 + timedelta(days=2),
            "phase": "rise",
        },
    ]
    assert injected_from_truth(rows) == [
        InjectedSpike(7, "A", "France", hours(0, 2)),
        InjectedSpike(9, "A", "France", hours(48, 1)),
    ]
