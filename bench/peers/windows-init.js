// Node-RED function node "On Start": the window state of windows.js.
context.set("s", {
    SIZE: 1.0,
    LATENESS: 0.0,
    windows: new Map(),
    frontier: -Infinity,
    maxTs: -Infinity,
    late: 0,
    bad: 0,
});
