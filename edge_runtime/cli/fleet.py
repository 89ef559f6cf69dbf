"""``edge-runtime fleet``: the operator's commands for fleet revisions.

* ``publish`` signs a bundle (a group's managed config tables, the runtime version, model
  hashes) with the registry's ``operator.key``, keeps a copy under
  ``<registry>/fleet/<group>/`` and publishes it, retained at QoS 1, on the group's bundle
  topic of the core broker; the core rolls it out in waves.
* ``rollback`` signs the content of the group's previous bundle again with a new serial (a
  site never takes an older serial), publishes a signed rollback request naming that serial
  (the core then rolls it out with ``fleet.rollback_waves``) and the bundle.
* ``status`` prints the fleet table from the core's ``/fleet.json``.

The broker commands connect as the core's broker user: with the core config's broker
settings (``-c core.toml``, ``--broker`` overrides the address) and, when that config names
no user, ``edge-core`` with the registry's ``core-broker-password``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edge_runtime import __version__
from edge_runtime.config.loader import load_model, resolve_broker
from edge_runtime.core.config import CoreConfig
from edge_runtime.errors import ConfigError, DecodeError, EdgeRuntimeError
from edge_runtime.fleet.bundle import OPERATOR, Bundle, RollbackRequest, open_bundle
from edge_runtime.fleet.revision import sha256_file
from edge_runtime.fleet.topics import bundle_topic, rollback_topic
from edge_runtime.identity import CORE_USER, Sealer, load_private_key, load_public_key
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink

__all__ = ["add_fleet_parser"]

_CONNECT_TIMEOUT_S = 15.0
_GROUP_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


# -- the history under <registry>/fleet/<group>/ ---------------------------------------------


@dataclass(frozen=True)
class Kept:
    """One bundle the operator published: its sealed bytes and what it was."""

    serial: int
    payload: bytes
    content_of: int
    """the serial whose content it carries (its own, or the one a rollback went back to)"""
    kind: str


def _history_dir(registry: Path, group: str) -> Path:
    return registry / "fleet" / group


def history(registry: Path, group: str) -> list[Kept]:
    """The group's bundles, oldest first."""
    out: list[Kept] = []
    for meta in _history_dir(registry, group).glob("*.json"):
        try:
            doc = orjson.loads(meta.read_bytes())
            payload = meta.with_suffix(".bundle").read_bytes()
            out.append(Kept(int(doc["serial"]), payload, int(doc["content_of"]), str(doc["kind"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{meta}: not a kept bundle ({exc}); remove it") from exc
    return sorted(out, key=lambda k: k.serial)


def keep(registry: Path, group: str, kept: Kept) -> Path:
    directory = _history_dir(registry, group)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kept.serial}.bundle"
    path.write_bytes(kept.payload)
    meta = {"serial": kept.serial, "content_of": kept.content_of, "kind": kept.kind}
    path.with_suffix(".json").write_bytes(orjson.dumps(meta))
    return path


def next_serial(kept: list[Kept]) -> int:
    """Microseconds now, or one above the newest serial kept (a clock set back)."""
    now = time.time_ns() // 1000
    return max(now, kept[-1].serial + 1) if kept else now


def rollback_target(kept: list[Kept], to: int | None) -> Kept:
    """The bundle whose content a rollback publishes again: ``to``, or the newest bundle
    published (not itself a rollback) before the content the group runs now."""
    if not kept:
        raise ConfigError("nothing was published for this group: no bundle to roll back to")
    if to is not None:
        for k in kept:
            if k.serial == to:
                return k
        raise ConfigError(f"no bundle {to} kept for this group; see its folder for serials")
    current = kept[-1].content_of
    earlier = [k for k in kept if k.kind == "publish" and k.serial < current]
    if not earlier:
        raise ConfigError(
            f"bundle {current} is the first this group had: there is nothing before it"
        )
    return earlier[-1]


# -- the broker ---------------------------------------------------------------------------------


def _broker(args: argparse.Namespace) -> BrokerConfig:
    config = load_model(CoreConfig, args.config) if args.config else CoreConfig()
    update: dict[str, Any] = {"client_id": f"edge-fleet-cli-{os.getpid()}", "clean_start": True}
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        update.update(host=host or "127.0.0.1", port=int(port))
    password = Path(args.registry) / "core-broker-password"
    if config.broker.username is None and password.is_file():
        update.update(username=CORE_USER, password_file=password)
    broker = BrokerConfig.model_validate({**config.broker.model_dump(), **update})
    resolve_broker(broker, "broker", args.config or "the command line")
    return broker


async def _publish(broker: BrokerConfig, messages: list[tuple[str, bytes]]) -> None:
    async with MqttLink(broker, client_id=str(broker.client_id), role="core") as link:
        try:
            await asyncio.wait_for(link.wait_connected(), _CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise EdgeRuntimeError(
                f"cannot reach the core broker {broker.host}:{broker.port} "
                f"({link.last_error or 'no answer'}); check --broker or -c"
            ) from None
        for topic, payload in messages:
            await link.publish(topic, payload, qos=1, retain=True)


def _operator(registry: Path) -> Sealer:
    return Sealer(load_private_key(registry / "operator.key"), OPERATOR)


# -- the commands ----------------------------------------------------------------------------


def _models(args: argparse.Namespace) -> dict[str, str]:
    models: dict[str, str] = {}
    for item in args.model or []:
        name, sep, sha = item.partition("=")
        if not sep or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ConfigError(f"--model {item!r}: give NAME=SHA256 (64 lowercase hex digits)")
        models[name] = sha
    for path in args.model_file or []:
        file = Path(path)
        try:
            models[file.name] = sha256_file(file)
        except OSError as exc:
            raise ConfigError(f"--model-file {path}: {exc.strerror}") from exc
    return models


def cmd_publish(args: argparse.Namespace) -> int:
    registry = Path(args.registry)
    operator = _operator(registry)
    try:
        text = Path(args.managed).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {args.managed}: {exc.strerror}") from exc
    kept = history(registry, args.group)
    bundle = Bundle(
        group=args.group,
        serial=next_serial(kept),
        config=text,
        runtime_version=args.runtime_version or __version__,
        models=_models(args),
        health_timeout_s=args.health_timeout,
        issued_at=time.time(),
    )
    try:
        managed = bundle.managed_hash  # parses it: a bundle a site would refuse stays here
    except DecodeError as exc:
        raise ConfigError(str(exc), source=args.managed) from exc
    payload = bundle.seal(operator)
    broker = _broker(args)
    asyncio.run(_publish(broker, [(bundle_topic(args.group), payload)]))
    # kept once published: a rollback goes back only to bundles the sites could have had
    path = keep(registry, args.group, Kept(bundle.serial, payload, bundle.serial, "publish"))
    print(
        f"bundle {bundle.serial} for group {args.group} published (runtime "
        f"{bundle.runtime_version}, managed config {managed}, {len(bundle.models)} model(s)); "
        f"kept in {path}"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    registry = Path(args.registry)
    operator = _operator(registry)
    kept = history(registry, args.group)
    target = rollback_target(kept, args.to)
    try:
        old = open_bundle(target.payload, load_public_key(registry / "operator.pub"))
    except DecodeError as exc:
        raise ConfigError(f"the kept bundle {target.serial} does not verify: {exc}") from exc
    bundle = Bundle(
        group=args.group,
        serial=next_serial(kept),
        config=old.config,
        runtime_version=old.runtime_version,
        models=old.models,
        health_timeout_s=old.health_timeout_s,
        issued_at=time.time(),
    )
    payload = bundle.seal(operator)
    request = RollbackRequest(args.group, bundle.serial).seal(operator)
    broker = _broker(args)
    messages = [(rollback_topic(args.group), request), (bundle_topic(args.group), payload)]
    asyncio.run(_publish(broker, messages))
    keep(registry, args.group, Kept(bundle.serial, payload, target.content_of, "rollback"))
    print(
        f"group {args.group} rolled back to the content of bundle {target.content_of}, "
        f"published as bundle {bundle.serial}"
    )
    return 0


def _token(args: argparse.Namespace) -> str | None:
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(f"environment variable {args.token_env!r} is not set")
        return token
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.token_file}: {exc.strerror}") from exc
    return None


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    config = load_model(CoreConfig, args.config) if args.config else CoreConfig()
    return f"http://{config.http_host}:{config.http_port}"


def fetch_fleet(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(url + "/fleet.json")  # noqa: S310 (the operator's URL)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            doc: dict[str, Any] = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        hint = " (pass --token-env or --token-file)" if exc.code == 401 else ""
        raise EdgeRuntimeError(f"{url}/fleet.json answered {exc.code}{hint}") from exc
    except urllib.error.URLError as exc:
        raise EdgeRuntimeError(f"no core answers at {url}: {exc.reason}") from exc
    return doc


def fleet_table(doc: dict[str, Any]) -> str:
    """The fleet as text: one line per group's rollout, one line per site."""
    lines: list[str] = []
    for group, g in doc["groups"].items():
        r = g["rollout"]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())) or "-"
        lines.append(
            f"group {group}: bundle {g['serial']}{' (rollback)' if r['rollback'] else ''} "
            f"{r['state']}, wave {r['wave']} of {len(r['waves'])}, {outcomes}"
            + (f"; {r['reason']}" if r["reason"] else "")
        )
    header = ("SITE", "GROUP", "STATE", "DESIRED", "RUNNING", "HB AGE", "BACKLOG", "LAG", "GAPS")
    rows = [header]
    for s in doc["sites"]:
        desired, reported = s["desired"] or {}, s["reported"] or {}
        rows.append(
            (
                s["site"],
                s["group"] or "-",
                s["state"],
                str(desired.get("serial", "-")),
                str(reported.get("running_serial", "-")),
                "-" if s["heartbeat_age_s"] is None else f"{s['heartbeat_age_s']:.0f}s",
                "-" if s["backlog"] is None else str(s["backlog"]),
                "-" if s["lag_s"] is None else f"{s['lag_s']:.1f}s",
                "-" if s["missing"] is None else str(s["missing"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for s in doc["sites"]:
        for cause in s["causes"]:
            lines.append(f"  {s['site']}: {cause['text']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    doc = fetch_fleet(_base_url(args), _token(args))
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(fleet_table(doc))
    return 0


def _group(value: str) -> str:
    if not re.fullmatch(_GROUP_PATTERN, value):
        raise argparse.ArgumentTypeError("1-64 letters, digits, '_', '.' or '-'")
    return value


def add_fleet_parser(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="publish, roll back and watch fleet revisions")
    cmds = fleet.add_subparsers(dest="fleet_command", required=True)

    def broker_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--group", required=True, type=_group, help="the group of sites")
        p.add_argument("--registry", required=True, help="the site registry (operator.key)")
        p.add_argument("-c", "--core-config", dest="config", help="core config (its broker)")
        p.add_argument("--broker", help="core broker as HOST:PORT (overrides the config)")

    p = cmds.add_parser("publish", help="sign a bundle for a group and publish it")
    broker_options(p)
    p.add_argument(
        "--config",
        dest="managed",
        required=True,
        help="TOML with the managed tables only ([[pipelines]], [ingest], [checkpoint])",
    )
    p.add_argument("--runtime-version", help=f"the runtime version sites must be ({__version__})")
    p.add_argument("--model", action="append", help="NAME=SHA256 a model file must have")
    p.add_argument("--model-file", action="append", help="a model file: its name and sha256")
    p.add_argument(
        "--health-timeout",
        type=float,
        default=30.0,
        help="seconds a site waits to be healthy before it rolls back (default 30)",
    )
    p.set_defaults(func=cmd_publish)

    p = cmds.add_parser("rollback", help="publish the group's previous bundle again (new serial)")
    broker_options(p)
    p.add_argument("--to", type=int, help="the serial to go back to (default: the previous)")
    p.set_defaults(func=cmd_rollback)

    p = cmds.add_parser("status", help="the fleet table from the core (/fleet.json)")
    p.add_argument("--url", help="the core's ops URL (default: from -c, else 127.0.0.1:9109)")
    p.add_argument("-c", "--core-config", dest="config", help="core config (its http port)")
    p.add_argument("--token-env", help="environment variable with the core's ops token")
    p.add_argument("--token-file", help="file with the core's ops token")
    p.add_argument("--json", action="store_true", help="print /fleet.json as it is")
    p.set_defaults(func=cmd_status)
