"""Tracker, zones, lines, windows and alerts on synthetic boxes with exact answers, and the
tracker on the real video cut."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge_runtime.camera import (
    COCO_CLASSES,
    AlertRuleConfig,
    CameraAnalytics,
    CameraAnalyticsConfig,
    Detections,
    IoUTracker,
    LineConfig,
    TrackerConfig,
    ZoneConfig,
    points_in_polygon,
)
from edge_runtime.errors import ConfigError

PERSON, CAR = 0, 2


def dets(boxes: list[list[float]], classes: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(
        np.asarray(boxes, np.float32).reshape(n, 4),
        np.linspace(0.9, 0.5, n).astype(np.float32) if n else np.zeros(0, np.float32),
        np.asarray(classes if classes is not None else [PERSON] * n, np.int64),
    )


def person_at(x: float, y: float, w: float = 20, h: float = 40) -> list[float]:
    """Box whose bottom centre (the anchor) is (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


def test_tracker_confirms_after_min_hits_and_keeps_the_id() -> None:
    tracker = IoUTracker(TrackerConfig(min_hits=3))
    reported = []
    for k in range(6):
        tracks = tracker.update(dets([person_at(50 + 5 * k, 100)]))
        reported.append((tracks.ids.tolist(), tracks.new.tolist()))
    assert reported == [
        ([], []),
        ([], []),
        ([1], [True]),
        ([1], [False]),
        ([1], [False]),
        ([1], [False]),
    ]
    assert tracker.confirmed_total == 1


def test_tracker_forgets_after_max_age() -> None:
    tracker = IoUTracker(TrackerConfig(min_hits=1, max_age=2))
    box = person_at(100, 100)
    assert tracker.update(dets([box])).ids.tolist() == [1]
    for _ in range(2):
        assert len(tracker.update(dets([]))) == 0
    assert tracker.update(dets([box])).ids.tolist() == [1]  # missed 2 frames: still alive
    for _ in range(3):
        tracker.update(dets([]))
    assert len(tracker) == 0
    assert tracker.update(dets([box])).ids.tolist() == [2]  # gone for 3 frames: a new object


def test_tracker_matches_by_iou_and_class() -> None:
    tracker = IoUTracker(TrackerConfig(min_hits=1))
    first = tracker.update(dets([[0, 0, 10, 10], [100, 0, 110, 10]], [PERSON, CAR]))
    assert first.ids.tolist() == [1, 2]
    # both boxes jump; the car now sits where the person was: classes keep them apart
    swapped = tracker.update(
        dets([[1, 0, 11, 10], [101, 0, 111, 10], [0, 0, 10, 10]], [PERSON, CAR, CAR])
    )
    assert dict(zip(swapped.ids.tolist(), swapped.class_ids.tolist(), strict=True)) == {
        1: PERSON,
        2: CAR,
        3: CAR,
    }
    np.testing.assert_allclose(swapped.boxes[swapped.ids == 1], [[1, 0, 11, 10]])


def _crossing_config(**extra: object) -> CameraAnalyticsConfig:
    return CameraAnalyticsConfig.model_validate(
        {
            "window_s": 10,
            "classes": ["person", "car"],
            "tracker": {"min_hits": 3},
            # walking from start to end (downwards) side A (left) is x > 100, side B is x < 100
            "lines": [
                {"name": "gate", "start": [100, 0], "end": [100, 200], "classes": ["person"]}
            ],
            **extra,
        }
    )


def test_line_crossings_on_a_synthetic_trajectory() -> None:
    analytics = CameraAnalytics("cam1", _crossing_config(), COCO_CLASSES)
    crossings = []
    for k in range(13):
        boxes = [
            person_at(40 + 10 * k, 100),  # B -> A: out (touches the line exactly at k = 6)
            person_at(170 - 10 * k, 180),  # A -> B: in
            person_at(40 + 10 * k, 300),  # passes below the end of the segment: not counted
            [170 - 10 * k - 30, 20, 170 - 10 * k + 30, 60],  # a car: the line counts people
        ]
        frame = analytics.process(k * 0.5, dets(boxes, [PERSON, PERSON, PERSON, CAR]), (640, 480))
        crossings += [(c.track_id, c.direction, c.ts, c.class_name) for c in frame.crossings]
    # person 1 touches the line at k = 6 (ts 3.0) and is past it at k = 7; person 2 at k = 8
    assert crossings == [(1, "out", 3.5, "person"), (2, "in", 4.0, "person")]
    [window] = analytics.flush()
    assert window.camera == "cam1"
    assert (window.window_start, window.window_end) == (0, 10)
    assert window.frames == 13
    assert window.stats["line.gate.person.in"] == 1
    assert window.stats["line.gate.person.out"] == 1
    assert "line.gate.car.in" not in window.stats
    assert window.stats["tracks.person.unique"] == 3
    assert window.stats["tracks.car.unique"] == 1
    assert window.stats["count.person.mean"] == 3
    assert window.stats["count.car.max"] == 1
    assert analytics.flush() == []


def test_points_in_a_concave_polygon() -> None:
    l_shape = np.array([[0, 0], [100, 0], [100, 40], [40, 40], [40, 100], [0, 100]], float)
    points = np.array(
        [[20, 20], [80, 20], [20, 80], [80, 80], [120, 20], [-5, 50], [39, 99]], float
    )
    assert points_in_polygon(points, l_shape).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("coords", ["pixel", "normalized"])
def test_zone_occupancy_and_window_statistics(coords: str) -> None:
    square = [[0, 0], [100, 0], [100, 100], [0, 100]]
    polygon = square if coords == "pixel" else [[x / 200, y / 400] for x, y in square]
    config = CameraAnalyticsConfig.model_validate(
        {
            "window_s": 10,
            "classes": ["person", "car"],
            "zones": [{"name": "door", "polygon": polygon, "coords": coords}],
        }
    )
    analytics = CameraAnalytics("cam2", config, COCO_CLASSES)
    frames = [
        # (person anchors, car anchors); the anchor is the bottom centre of the box
        ([(50, 50)], [(150, 50)]),
        ([(50, 50), (10, 90), (150, 150)], [(50, 99)]),
        ([(50, 150), (99, 1)], []),
    ]
    zone_counts = []
    for k, (people, cars) in enumerate(frames):
        boxes = [person_at(x, y) for x, y in people] + [person_at(x, y) for x, y in cars]
        classes = [PERSON] * len(people) + [CAR] * len(cars)
        result = analytics.process(float(k), dets(boxes, classes), (200, 400))
        zone_counts.append(result.zone_counts["door"])
        assert result.windows == []
    assert zone_counts == [
        {"person": 1, "car": 0},
        {"person": 2, "car": 1},
        {"person": 1, "car": 0},
    ]
    closing = analytics.process(12.0, dets([]), (200, 400))
    [window] = closing.windows
    assert (window.window_start, window.window_end, window.frames) == (0, 10, 3)
    stats = window.stats
    assert stats["count.person.mean"] == 2
    assert stats["count.person.max"] == 3
    assert stats["count.person.min"] == 1
    assert stats["count.car.mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["zone.door.person.mean"] == pytest.approx(4 / 3, abs=1e-4)
    assert stats["zone.door.person.max"] == 2
    assert stats["zone.door.car.max"] == 1
    [second] = analytics.flush()
    assert (second.window_start, second.frames) == (10, 1)


def test_zone_alert_fires_once_per_episode_with_cooldown() -> None:
    config = CameraAnalyticsConfig.model_validate(
        {
            "classes": ["person"],
            "zones": [{"name": "crossing", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}],
            "alerts": [
                {
                    "name": "crowd",
                    "metric": "zone_occupancy",
                    "zone": "crossing",
                    "class_name": "person",
                    "threshold": 2,
                    "cooldown_s": 5,
                }
            ],
        }
    )
    analytics = CameraAnalytics("cam3", config, COCO_CLASSES)
    occupancy = [1, 2, 3, 1, 2, 2, 1, 1, 2]
    fired = []
    for ts, n in enumerate(occupancy):
        inside = [person_at(10 + 20 * i, 50) for i in range(n)]
        frame = analytics.process(float(ts), dets([*inside, person_at(300, 300)]), (640, 480))
        fired += [(a.ts, a.value, a.rule, a.zone) for a in frame.alerts]
    # fires at 1; still on at 2; re-armed at 3 but 4 and 5 fall in the cooldown; fires at 8
    assert fired == [(1.0, 2.0, "crowd", "crossing"), (8.0, 2.0, "crowd", "crossing")]


def test_count_alert_needs_the_condition_to_hold() -> None:
    config = CameraAnalyticsConfig.model_validate(
        {
            "classes": ["person"],
            "alerts": [
                {"name": "busy", "metric": "class_count", "threshold": 3, "min_duration_s": 2}
            ],
        }
    )
    analytics = CameraAnalytics("cam4", config, COCO_CLASSES)
    fired = []
    for ts, n in enumerate([3, 3, 2, 3, 3, 3, 3]):
        frame = analytics.process(
            float(ts), dets([person_at(30 * i + 20, 50) for i in range(n)]), (640, 480)
        )
        fired += frame.alerts
    assert [a.ts for a in fired] == [5.0]
    assert fired[0].message == "person count 3 in frame >= 3"
    assert (fired[0].camera, fired[0].metric, fired[0].zone) == ("cam4", "class_count", None)


def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="zone 'nowhere' is not defined"):
        CameraAnalyticsConfig.model_validate(
            {
                "alerts": [
                    {"name": "a", "metric": "zone_occupancy", "zone": "nowhere", "threshold": 1}
                ]
            }
        )
    with pytest.raises(ValidationError, match="needs a zone"):
        AlertRuleConfig.model_validate({"name": "a", "metric": "zone_occupancy", "threshold": 1})
    with pytest.raises(ValidationError, match="start and end are the same point"):
        LineConfig.model_validate({"name": "l", "start": [1, 1], "end": [1, 1]})
    with pytest.raises(ValidationError, match="at least 3"):
        ZoneConfig.model_validate({"name": "z", "polygon": [[0, 0], [1, 1]]})
    with pytest.raises(ConfigError, match="'scooter'"):
        CameraAnalytics("cam", CameraAnalyticsConfig(classes=("person", "scooter")), COCO_CLASSES)


def test_tracking_over_the_real_cut(cut_detections: list[Detections]) -> None:
    config = CameraAnalyticsConfig(window_s=60, classes=("person", "car", "truck"))
    analytics = CameraAnalytics("vtest", config, COCO_CLASSES)
    per_frame_tracks = []
    for k, frame_dets in enumerate(cut_detections):
        result = analytics.process(k / 10, frame_dets, (768, 576))
        per_frame_tracks.append(len(result.tracks))
    [window] = analytics.flush()
    # 12 s of footage with 3 to 9 people in view: some people get more than one track when the
    # detector loses them behind the lamp post or when they pass each other
    assert 6 <= window.stats["tracks.person.unique"] <= 30
    # the parked van (scored 0.5-0.6 as a truck) and car: at most a few tracks each, as the
    # van's score drops under the threshold now and then
    assert 1 <= window.stats["tracks.truck.unique"] <= 3
    assert 1 <= window.stats["tracks.car.unique"] <= 3
    assert np.mean(per_frame_tracks) >= 4
    assert window.frames == 120
