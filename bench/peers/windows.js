// Node-RED function node body: 1-s tumbling event-time windows per key (count, sum, min, max,
// mean), the same windows as the edge-runtime `windows` pipeline of the peer comparison:
// window k covers [k*SIZE, (k+1)*SIZE) of the message's "ts"; a window closes when the
// watermark (largest ts seen - LATENESS) reaches its end; a reading for a closed window is
// dropped and counted. Each batch of closed windows goes out as one message: a JSON array of
// summaries. State lives in the node context (set up in windows-init.js).
const s = context.get("s");
const p = msg.payload;
const ts = p.ts;
const v = p.value;
if (typeof ts !== "number" || typeof v !== "number") {
    s.bad += 1;
    return null;
}
const topic = msg.topic;
const key = topic.slice(topic.lastIndexOf("/") + 1);
const w = Math.floor(ts / s.SIZE);
if (w < s.frontier) {
    s.late += 1;
    return null;
}
let win = s.windows.get(w);
if (win === undefined) {
    win = new Map();
    s.windows.set(w, win);
}
let a = win.get(key);
if (a === undefined) {
    win.set(key, { count: 1, sum: v, min: v, max: v });
} else {
    a.count += 1;
    a.sum += v;
    if (v < a.min) a.min = v;
    if (v > a.max) a.max = v;
}
if (ts > s.maxTs) s.maxTs = ts;
const frontier = Math.floor((s.maxTs - s.LATENESS - s.SIZE) / s.SIZE) + 1;
if (frontier <= s.frontier) return null;
const out = [];
for (const [k, wn] of s.windows) {
    if (k >= frontier) continue;
    for (const [name, st] of wn) {
        out.push({
            key: name,
            start: k * s.SIZE,
            end: (k + 1) * s.SIZE,
            count: st.count,
            sum: st.sum,
            min: st.min,
            max: st.max,
            mean: st.sum / st.count,
        });
    }
    s.windows.delete(k);
}
s.frontier = frontier;
if (out.length === 0) return null;
return { topic: "bench/nodered/summaries", payload: out };
