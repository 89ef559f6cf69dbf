"""The image info file that containers/build writes, as /status reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.ops import image_info
from edge_runtime.ops.image import IMAGE_INFO_ENV

INFO = (
    b'{"version": "0.1.0", "digest": "sha256:' + b"ab" * 32 + b'", '
    b'"built": "2026-12-05T17:00:00Z", "image": "site"}\n'
)


def test_reads_the_file_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "image.json"
    path.write_bytes(INFO)
    monkeypatch.setenv(IMAGE_INFO_ENV, str(path))
    info = image_info()
    assert info is not None
    assert info["image"] == "site"
    assert info["version"] == "0.1.0"
    assert info["digest"].startswith("sha256:")


def test_an_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_INFO_ENV, str(tmp_path / "elsewhere.json"))
    path = tmp_path / "image.json"
    path.write_bytes(INFO)
    assert image_info(path) == image_info(path) and image_info(path) is not None


@pytest.mark.parametrize("content", [None, b"", b"not json", b"[1, 2]", b'"a string"'], ids=repr)
def test_no_image_when_absent_or_not_an_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    path = tmp_path / "image.json"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv(IMAGE_INFO_ENV, str(path))
    assert image_info() is None


def test_unreadable_is_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_INFO_ENV, str(tmp_path))  # a directory: read fails
    assert image_info() is None
