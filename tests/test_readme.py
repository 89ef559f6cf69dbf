"""The README's commands, as written: each parses with the real command line, the files and
topics they name fit each other, and the quick ones run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_runtime.cli.main import build_parser
from edge_runtime.sources.topics import TopicMatcher

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[list[str]]:
    """Every command line of the README's ``sh`` blocks, comments removed, as argv."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out.append(argv)
    return out


COMMANDS = _commands()
EDGE = [argv[1:] for argv in COMMANDS if argv[0] == "edge-runtime"]


def _options(args: list[str]) -> dict[str, str]:
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("-")}


def test_the_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert ["scripts/run"] in COMMANDS
    assert ["scripts/check"] in COMMANDS
    for argv in (["scripts/run"], ["scripts/check"]):
        assert os.access(ROOT / argv[0], os.X_OK)
    assert "exec scripts/check" in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("args", EDGE, ids=[" ".join(a[:2]) for a in EDGE])
def test_every_edge_runtime_command_parses(args: list[str]) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`edge-runtime {' '.join(args)}` is refused by the parser ({exc})")


def test_files_named_by_the_commands_exist_or_are_made_before() -> None:
    made: set[str] = set()
    for args in EDGE:
        opts = _options(args)
        for flag in ("-c", "--config", "--into-site"):
            if flag in opts:
                assert (ROOT / opts[flag]).is_file(), f"{opts[flag]} (in {args})"
        if args[0] == "replay":
            name = args[1]
            assert name in made or (ROOT / name).exists(), f"{name}: not in the repo, not made"
        if args[0] == "import":
            made.add(args[2])
        if args[0] == "record":
            made.add(args[1])
    for argv in COMMANDS:
        if argv[0].endswith("python") and argv[1].startswith("bench/"):
            assert (ROOT / argv[1]).is_file()


def _pipeline_topics(config: str) -> list[str]:
    doc = tomllib.loads((ROOT / config).read_text())
    return [t for p in doc["pipelines"] for t in p.get("topics", [])]


def test_an_imported_recording_has_a_pipeline_in_the_site_it_is_replayed_into() -> None:
    parser = build_parser()
    imports = [parser.parse_args(a) for a in EDGE if a[:2] == ["import", "akl"]]
    into = [_options(a)["--into-site"] for a in EDGE if "--into-site" in a]
    assert imports and into
    topic = imports[0].topic.format(sensor="45-queen-street")
    for config in into:
        matcher = TopicMatcher(_pipeline_topics(config))
        assert matcher.matches(topic), f"{config} has no pipeline for {topic}"


def test_a_video_replayed_as_a_camera_lands_on_that_camera_of_the_example() -> None:
    parser = build_parser()
    for args in EDGE:
        if args[0] == "replay" and "--camera" in args:
            ns = parser.parse_args(args)
            topic = ns.camera_topic.format(camera=ns.camera)
            doc = tomllib.loads((ROOT / "examples/camera-site.toml").read_text())
            cameras = {c["id"]: c.get("topic") for p in doc["pipelines"] for c in p["cameras"]}
            assert cameras.get(ns.camera) == topic, (ns.camera, topic, cameras)


@pytest.mark.parametrize(
    "args",
    [a for a in EDGE if a[0] in ("check", "config-reference")],
    ids=" ".join,
)
def test_the_quick_commands_run(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_python_m_help_runs() -> None:
    assert ["python", "-m", "edge_runtime", "--help"] in COMMANDS
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
