"""The rollout state machine, driven by hand-made heartbeats and a clock of our own."""

from __future__ import annotations

from edge_runtime.core.rollout import Rollout
from edge_runtime.fleet import Heartbeat, Revision

REV = Revision("0.1.0", "abc")
SITES = [f"s{i}" for i in range(5)]


def beat(site: str, running: int, last: int = 0, outcome: str | None = None) -> Heartbeat:
    return Heartbeat(
        site=site,
        group="g",
        revision=REV,
        managed_hash="h",
        running_serial=running,
        last_serial=last or running,
        last_outcome=outcome,  # type: ignore[arg-type]
        last_reason=f"{outcome} because" if outcome else "",
    )


def rollout(**kw: object) -> Rollout:
    args: dict[str, object] = {
        "group": "g",
        "serial": 7,
        "waves": [0.2, 1.0],
        "failure_threshold": 0,
        "wave_timeout_s": 30.0,
    }
    args.update(kw)
    return Rollout(**args)  # type: ignore[arg-type]


def test_a_canary_then_the_rest() -> None:
    r = rollout()
    assert r.step(SITES, 0.0) == ["s0"]  # a fifth of five: one canary
    assert r.step(SITES, 1.0) == []  # waits for the canary
    r.observe(beat("s1", 7))  # not given the bundle: ignored
    r.observe(beat("s0", 7))
    assert r.step(SITES, 2.0) == ["s1", "s2", "s3", "s4"]
    for site in SITES[1:]:
        r.observe(beat(site, 7))
    assert r.step(SITES, 3.0) == []
    assert r.state == "done" and r.as_dict(3.0)["outcomes"] == {"applied": 5}
    # a site that joins afterwards gets it at once
    assert r.step([*SITES, "s5"], 4.0) == ["s5"]


def test_a_failed_canary_halts_and_later_waves_are_not_touched() -> None:
    r = rollout()
    assert r.step(SITES, 0.0) == ["s0"]
    r.observe(beat("s0", 5, 7, "rolled_back"))
    assert r.step(SITES, 1.0) == []
    assert r.state == "halted"
    assert "s0: rolled_back (rolled_back because)" in r.reason
    assert r.step(SITES, 2.0) == [] and set(r.assigned) == {"s0"}
    assert r.pending_wave("s3") is None


def test_no_outcome_before_the_deadline_is_a_failure_the_threshold_allows() -> None:
    r = rollout(failure_threshold=1, waves=[0.4, 1.0])
    assert r.step(SITES, 0.0) == ["s0", "s1"]
    r.observe(beat("s0", 7))
    assert r.step(SITES, 29.0) == []
    assert r.step(SITES, 31.0) == ["s2", "s3", "s4"]  # s1 timed out: one failure, allowed
    assert r.results["s1"][0] == "timeout"
    r.observe(beat("s2", 5, 7, "refused"))
    r.observe(beat("s3", 5, 7, "refused"))
    assert r.step(SITES, 32.0) == []
    assert r.state == "halted" and "wave 2: 2 failure(s)" in r.reason


def test_a_rollback_goes_to_everyone_at_once_and_survives_a_restart() -> None:
    r = rollout()
    r.switch_to_rollback([1.0])
    assert r.step(SITES, 0.0) == SITES
    copy = Rollout.from_doc(r.to_doc(), 100.0)
    assert copy.assigned == r.assigned and copy.rollback and copy.waves == [1.0]
    assert copy.deadline == 130.0


def test_a_group_without_members_is_done_and_gives_newcomers_the_bundle() -> None:
    r = rollout()
    assert r.step([], 0.0) == [] and r.state == "done"
    assert r.step(["s0"], 1.0) == ["s0"]
