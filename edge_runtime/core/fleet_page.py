"""The fleet page, ``/fleet``, and its data, ``/fleet.json``, on the core's ops server.

One plain page (HTML, a little JavaScript, no external assets) listing every site: its
group, state, desired and reported revision, drift causes, heartbeat age, backlog, lag, gaps
and rejected messages, with each group's rollout above. It fetches ``fleet.json`` every
two seconds and redraws.

Authentication: the page itself holds no data and is served without a token (like
``/healthz``); the data, ``/fleet.json``, needs the ops bearer token like ``/status``. When
the core has a token, open the page as ``/fleet#token=<token>``: the part after ``#`` never
leaves the browser (not in the request, not in a proxy's log), and the page sends it as
``Authorization: Bearer`` with each fetch and keeps it in the tab's sessionStorage only.
Without a token it asks for one.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from edge_runtime.core.fleet import FleetManager
from edge_runtime.core.fleet_view import fleet_view

__all__ = ["PAGE_PATH", "add_fleet_routes"]

PAGE_PATH: Final = "/fleet"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-runtime fleet</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
#meta { color: #666; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5em; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd;
  vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .92em; }
.state { font-weight: 600; }
.in_sync { color: #17692a; } .pending { color: #8a6100; } .drift { color: #b00020; }
.stale, .never_heard { color: #7a1fa2; } .unmanaged { color: #555; }
.halted { color: #b00020; font-weight: 600; } .done { color: #17692a; }
#error { color: #b00020; font-weight: 600; }
ul.causes { margin: 0; padding-left: 1.1em; }
</style></head>
<body>
<h1>Fleet</h1>
<div id="meta">loading&hellip;</div>
<div id="error"></div>
<h2>Rollouts</h2>
<table id="groups"><thead><tr><th>group</th><th>bundle</th><th>runtime</th>
<th>config</th><th>rollout</th><th>wave</th><th>outcomes</th><th>reason</th></tr></thead>
<tbody></tbody></table>
<h2>Sites</h2>
<table id="sites"><thead><tr><th>site</th><th>group</th><th>state</th>
<th>desired</th><th>reported</th><th>drift causes</th><th>heartbeat age</th>
<th>backlog</th><th>lag</th><th>gaps</th><th>rejected</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const tokenKey = "edge-runtime-fleet-token";
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(tokenKey, fragment.get("token"));
    history.replaceState(null, "", location.pathname);
  }
}
takeToken();
window.addEventListener("hashchange", () => { takeToken(); refresh(); });
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "\\u2013" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function seconds(v) { return v === null || v === undefined ? null : v.toFixed(1) + " s"; }
function revision(d) {
  if (!d) return null;
  return "bundle " + d.serial + " \\u00b7 " + d.runtime_version + " \\u00b7 config " +
    d.managed_hash;
}
function reported(r) {
  if (!r) return null;
  return r.revision_id + " \\u00b7 bundle " + r.running_serial + " \\u00b7 " +
    r.runtime_version + " \\u00b7 config " + r.managed_hash +
    (r.last_outcome ? " \\u00b7 last: " + r.last_outcome : "");
}
function draw(doc) {
  const states = Object.entries(doc.states).filter(e => e[1] > 0)
    .map(e => e[0] + " " + e[1]).join(", ");
  document.getElementById("meta").textContent = doc.sites.length + " site(s): " +
    (states || "none") + " \\u00b7 fleet broker " + doc.broker + " \\u00b7 updated " +
    new Date(doc.now * 1000).toLocaleTimeString();
  const groups = document.querySelector("#groups tbody");
  groups.replaceChildren();
  for (const [name, g] of Object.entries(doc.groups)) {
    const tr = document.createElement("tr");
    tr.dataset.group = name;
    cell(tr, name);
    cell(tr, g.serial + (g.rollout.rollback ? " (rollback)" : ""));
    cell(tr, g.runtime_version);
    cell(tr, g.managed_hash);
    cell(tr, g.rollout.state, g.rollout.state);
    cell(tr, g.rollout.wave + " of " + g.rollout.waves.length);
    cell(tr, Object.entries(g.rollout.outcomes).map(e => e[0] + " " + e[1]).join(", "));
    cell(tr, g.rollout.reason);
    groups.appendChild(tr);
  }
  const body = document.querySelector("#sites tbody");
  body.replaceChildren();
  for (const s of doc.sites) {
    const tr = document.createElement("tr");
    tr.dataset.site = s.site;
    tr.dataset.state = s.state;
    cell(tr, s.site);
    cell(tr, s.group);
    cell(tr, s.state.replace("_", " "), "state " + s.state);
    cell(tr, revision(s.desired));
    cell(tr, reported(s.reported));
    const causes = cell(tr, s.causes.length ? "" : null, "causes");
    if (s.causes.length) {
      const ul = document.createElement("ul");
      ul.className = "causes";
      for (const c of s.causes) {
        const li = document.createElement("li");
        li.dataset.cause = c.code;
        li.textContent = c.text;
        ul.appendChild(li);
      }
      causes.appendChild(ul);
    }
    cell(tr, seconds(s.heartbeat_age_s), "num");
    cell(tr, s.backlog, "num");
    cell(tr, seconds(s.lag_s), "num");
    cell(tr, s.missing === null || s.missing === undefined ? null :
      s.missing + (s.gaps.length ? " (" + s.gaps.map(g => g[0] + "\\u2013" + g[1])
        .join(", ") + ")" : ""), "num");
    cell(tr, s.rejected, "num");
    body.appendChild(tr);
  }
}
async function refresh() {
  const headers = {};
  const token = sessionStorage.getItem(tokenKey);
  if (token) headers["Authorization"] = "Bearer " + token;
  const error = document.getElementById("error");
  try {
    const resp = await fetch("fleet.json", {headers: headers, cache: "no-store"});
    if (resp.status === 401) {
      error.textContent = "This core needs its ops token: open this page as " +
        "/fleet#token=<token>.";
      return;
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    draw(await resp.json());
    error.textContent = "";
  } catch (e) {
    error.textContent = "cannot reach the core: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""


def add_fleet_routes(app: web.Application, manager: FleetManager) -> None:
    """Add ``/fleet`` (the page, served without a token) and ``/fleet.json`` (the data,
    behind the ops token) to the ops server's application before it starts."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=_PAGE,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def data(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(fleet_view(manager), option=orjson.OPT_INDENT_2),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(PAGE_PATH + ".json", data)
