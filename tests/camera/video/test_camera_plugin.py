"""The camera plugin's config checks, model lookup, and its stage driven without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from edge_runtime.camera import resolve_model_path
from edge_runtime.clock import SystemClock
from edge_runtime.errors import ConfigError
from edge_runtime.pipelines import PipelineContext, PluginRegistry, RawMessage, Summary
from edge_runtime_pipelines.camera import CameraConfig, CameraPipeline
from tests.camera.video._helpers import MODEL_PATH, MODEL_SHA256, T0, model_config, wait_until

MODEL = {"name": "m", "path": str(MODEL_PATH), "sha256": MODEL_SHA256}


def _config(cameras: list[dict[str, Any]], **fields: Any) -> CameraConfig:
    return CameraConfig.model_validate(
        {"type": "camera", "name": "cams", "model": MODEL, "cameras": cameras, **fields}
    )


def test_plugin_registers_and_topics_default_to_the_cameras() -> None:
    PluginRegistry().register(CameraPipeline)
    cfg = _config([{"id": "a", "topic": "c/a"}, {"id": "b", "url": "clip.avi"}])
    assert cfg.topics == ["c/a"]


@pytest.mark.parametrize(
    ("cameras", "fields", "message"),
    [
        ([{"id": "a"}], {}, "exactly one of topic"),
        ([{"id": "a", "topic": "c/a", "url": "x.avi"}], {}, "exactly one of topic"),
        ([{"id": "a", "topic": "c/+"}], {}, "no wildcards"),
        ([{"id": "a", "topic": "c/a"}, {"id": "a", "topic": "c/b"}], {}, "repeated: ['a']"),
        ([{"id": "a", "url": "x.avi"}], {}, "set topics"),
        ([{"id": "a", "topic": "c/a"}], {"topics": ["other/#"]}, "not covered"),
        ([{"id": "a", "topic": "c/a", "classes": ["unicorn"]}], {}, "not produced by model"),
        ([{"id": "a", "topic": "c/a"}], {"batch": {"max_batch": 8}}, "session.max_batch"),
        (
            [
                {
                    "id": "a",
                    "topic": "c/a",
                    "zones": [{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                    "alerts": [
                        {"name": "r", "metric": "zone_occupancy", "zone": "y", "threshold": 1}
                    ],
                }
            ],
            {},
            "camera 'a': Value error, alert 'r': zone 'y' is not defined",
        ),
    ],
)
def test_bad_configs_say_what_to_fix(
    cameras: list[dict[str, Any]], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _config(cameras, **fields)
    assert message in str(info.value)


def test_relative_model_path_falls_back_to_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rel = Path("models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx")
    assert resolve_model_path(rel) == MODEL_PATH
    assert resolve_model_path(Path("nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx")) == (
        MODEL_PATH
    )
    (tmp_path / "models/nanodet-m-coco").mkdir(parents=True)
    (tmp_path / rel).write_bytes(b"local copy")
    assert resolve_model_path(rel) == tmp_path / rel  # the working directory comes first
    with pytest.raises(ConfigError, match="not found") as info:
        resolve_model_path(Path("models/missing.onnx"))
    assert str(tmp_path) in str(info.value)


async def test_quiet_camera_window_is_closed_by_the_timer_and_alerts_leave(
    clip_jpegs: list[bytes],
) -> None:
    model = model_config().model_dump(mode="json")
    cfg = _config(
        [
            {
                "id": "a",
                "topic": "c/a",
                "zones": [
                    {
                        "name": "all",
                        "coords": "normalized",
                        "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]],
                    }
                ],
                "alerts": [
                    {
                        "name": "busy",
                        "metric": "zone_occupancy",
                        "zone": "all",
                        "threshold": 2,
                    }
                ],
            }
        ],
        model=model,
        window_s=10.0,
        idle_close_s=1.0,
    )
    context = PipelineContext(site_id="s", pipeline="cams", clock=SystemClock())
    pipeline = CameraPipeline(cfg, context)
    submitted: list[Summary] = []

    async def submit(summaries: Sequence[Summary]) -> None:
        submitted.extend(summaries)

    runner = asyncio.create_task(pipeline.run(submit))

    def offer(i: int, ts: float) -> None:
        payload = msgpack.packb({"ts": ts, "jpeg": clip_jpegs[i]})
        pipeline.offer(RawMessage("c/a", payload, received_at=context.clock.time()))

    for i in range(3):
        offer(i, T0 + i * 0.5)
        await wait_until(lambda i=i: pipeline.stats.frames_inferred == i + 1, timeout=30)
    pipeline.offer(RawMessage("c/unknown", b"x"))
    alerts = [s for s in submitted if s.kind == "alert"]
    assert [(s.key, s.attrs["rule"]) for s in alerts] == [("a/busy", "busy")]
    assert alerts[0].stats["value"] >= 2

    # the camera's clock runs (wall clock - offset at the last frame): now it is ~T0 + 1 there
    now = context.clock.time()
    assert pipeline.on_tick(now) == []  # the window [T0, T0 + 10) is still open
    assert pipeline.on_tick(now + 9.5) == []  # past its end, but not by idle_close_s
    windows = list(pipeline.on_tick(now + 11.5))
    assert [(s.key, s.window_start, s.stats["frames"]) for s in windows] == [("a", T0, 3)]
    assert windows[0].stats["zone.all.person.max"] >= 2

    offer(3, T0 + 2.0)  # a straggler for the window already sent: counted late, not reopened
    await wait_until(lambda: pipeline.stats.frames_inferred == 4, timeout=30)
    pipeline.close()
    await asyncio.wait_for(runner, 30)
    assert pipeline.flush() == []
    assert context.counters["frames_late"] == 1
    assert context.counters["frames_unknown_topic"] == 1
    assert context.counters["alerts"] == 1
