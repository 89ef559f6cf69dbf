// Node-RED settings for the peer comparison (bench/bench_peers.py starts Node-RED with them).
// No editor, no HTTP server, no telemetry or update checks: only the flow runs.
module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.BENCH_NODERED_UI_PORT || "1880", 10),
    logging: { console: { level: "warn", metrics: false, audit: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    editorTheme: { projects: { enabled: false } },
    contextStorage: { default: { module: "memory" } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    functionExternalModules: false,
};
