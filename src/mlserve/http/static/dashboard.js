// mlserve live dashboard: fed by the Server-Sent Events stream /v2/monitor/stream.
//
// Every text that comes from the server (model, version and feature names, audit entries)
// reaches the page through text nodes and setAttribute, never as markup.
"use strict";

(() => {
  const WINDOW_S = 5; // rates and p99 are computed over about this many seconds
  const HISTORY = 60; // points kept per sparkline
  const SVG = "http://www.w3.org/2000/svg";
  const SEP = "\u0000";

  // The stream's own query parameters may be passed through the page's URL.
  const pageQuery = new URLSearchParams(window.location.search);
  const streamQuery = new URLSearchParams();
  for (const name of ["interval", "max_seconds"]) {
    const value = pageQuery.get(name);
    if (value !== null && /^[0-9]+(\.[0-9]+)?$/.test(value)) streamQuery.set(name, value);
  }
  if (!streamQuery.has("interval")) streamQuery.set("interval", "1");
  const interval = Number(streamQuery.get("interval"));
  const streamUrl = new URL("v2/monitor/stream?" + streamQuery.toString(), window.location.href);

  let buckets = [];
  const snapshots = []; // {time, roles: Map(key → {total, counts})}, oldest first
  const series = new Map(); // key → {rate: [], p99: []}
  let lastEventAt = 0;
  let source = null;
  let retryTimer = null;

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function sparkline(values, cls) {
    const width = 120;
    const height = 26;
    const chart = svg("svg", {
      class: "spark " + cls,
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      "aria-hidden": "true",
    });
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    const top = Math.max(...finite, 0) || 1;
    const step = width / Math.max(HISTORY - 1, 1);
    const offset = width - (values.length - 1) * step;
    let segment = [];
    const flush = () => {
      if (segment.length === 1) segment.push([segment[0][0] + 1, segment[0][1]]);
      if (segment.length > 1) {
        chart.append(svg("polyline", { points: segment.map((p) => p.join(",")).join(" ") }));
      }
      segment = [];
    };
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        flush();
        return;
      }
      const x = (offset + i * step).toFixed(1);
      const y = (height - 2 - (v / top) * (height - 4)).toFixed(1);
      segment.push([x, y]);
    });
    flush();
    return chart;
  }

  function show(id, ...nodes) {
    document.getElementById(id).replaceChildren(...nodes);
  }

  // ------------------------------------------------------------------ formatting
  function fmtRate(v) {
    if (v === null || !Number.isFinite(v)) return "–";
    return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  function fmtSeconds(v) {
    if (v === null || !Number.isFinite(v)) return "–";
    if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
    if (v < 1) return (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + " ms";
    return v.toFixed(2) + " s";
  }

  function fmtNumber(v, digits) {
    return v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits);
  }

  // An object's entries by key: names in natural order ("m/2" before "m/10").
  function sorted(obj, rank) {
    const order = rank || ((k) => k);
    return Object.entries(obj || {}).sort(([a], [b]) =>
      String(order(a)).localeCompare(String(order(b)), "en", { numeric: true }),
    );
  }

  function roleOrder(role) {
    const i = ["stable", "canary", "shadow", "pinned"].indexOf(role);
    return (i < 0 ? 9 : i) + role;
  }

  function isObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  // ------------------------------------------------------------------ statistics
  // The q-quantile of latency bucket counts, interpolated within the bucket (as the server's
  // quantile() and PromQL's histogram_quantile).
  function quantile(counts, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    let lower = 0;
    for (let i = 0; i < counts.length; i++) {
      const bound = i < buckets.length ? buckets[i] : Infinity;
      const count = counts[i];
      if (count > 0 && seen + count >= rank) {
        return bound === Infinity ? lower : lower + ((bound - lower) * (rank - seen)) / count;
      }
      seen += count;
      lower = bound;
    }
    return lower;
  }

  // Rate and p99 of one version and role: the newest snapshot against the oldest kept one
  // (about WINDOW_S seconds old) that has it. Counters that went down mean the server
  // restarted: no figure until there is a new baseline.
  function windowed(key, now) {
    for (const base of snapshots) {
      if (base.time >= now.time) break;
      const old = base.roles.get(key);
      if (!old) continue;
      const cur = now.roles.get(key);
      const done = cur.total - old.total;
      if (done < 0 || cur.counts.length !== old.counts.length) return { rate: null, p99: null };
      const delta = cur.counts.map((c, i) => c - old.counts[i]);
      return { rate: done / (now.time - base.time), p99: quantile(delta, 0.99) };
    }
    return { rate: null, p99: null };
  }

  // ------------------------------------------------------------------ panels
  function renderTraffic(data, now) {
    const rows = [];
    const keys = new Set();
    for (const [endpoint, entry] of sorted(data.endpoints)) {
      const slash = endpoint.lastIndexOf("/");
      const model = endpoint.slice(0, slash);
      const version = endpoint.slice(slash + 1);
      for (const [role, state] of sorted(entry.roles, roleOrder)) {
        const key = endpoint + SEP + role;
        keys.add(key);
        const figures = windowed(key, now);
        let hist = series.get(key);
        if (!hist) {
          hist = { rate: [], p99: [] };
          series.set(key, hist);
        }
        hist.rate.push(figures.rate);
        hist.p99.push(figures.p99);
        if (hist.rate.length > HISTORY) {
          hist.rate.shift();
          hist.p99.shift();
        }
        const req = state.requests || {};
        rows.push(
          el(
            "tr",
            {
              class: "traffic-row",
              "data-model": model,
              "data-version": version,
              "data-role": role,
              "data-rate": figures.rate === null ? "" : figures.rate,
              "data-p99": figures.p99 === null ? "" : figures.p99,
            },
            el("td", {}, model),
            el("td", { class: "num" }, "v" + version),
            el("td", {}, el("span", { class: "role role-" + role }, role)),
            el("td", { class: "spark" }, sparkline(hist.rate, "spark-rate")),
            el("td", { class: "num rate" }, fmtRate(figures.rate)),
            el("td", { class: "spark" }, sparkline(hist.p99, "spark-p99")),
            el("td", { class: "num p99" }, fmtSeconds(figures.p99)),
            el("td", { class: "num" }, req.success ?? 0),
            el("td", { class: "num" + (req.invalid ? " warn" : "") }, req.invalid ?? 0),
            el("td", { class: "num" + (req.rejected ? " warn" : "") }, req.rejected ?? 0),
            el("td", { class: "num" + (req.error ? " bad" : "") }, req.error ?? 0),
            el("td", { class: "num" + (req.refused ? " bad" : "") }, req.refused ?? 0),
            el("td", { class: "num" }, entry.pending ?? 0),
          ),
        );
      }
    }
    for (const key of [...series.keys()]) if (!keys.has(key)) series.delete(key);
    if (!rows.length) {
      show("traffic", el("p", { class: "empty" }, "no requests yet"));
      return;
    }
    const head = el(
      "tr",
      {},
      ...["model", "version", "role"].map((h) => el("th", {}, h)),
      el("th", { colspan: 2, class: "num" }, "requests/s"),
      el("th", { colspan: 2, class: "num" }, "p99 latency"),
      ...["ok", "invalid", "rejected", "error", "refused", "pending"].map((h) => el("th", { class: "num" }, h)),
    );
    show("traffic", el("table", { class: "traffic" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  function splitBar(stable, canary, weight) {
    const title = canary === null ? `v${stable} 100%` : `v${stable} ${100 - weight}% · v${canary} ${weight}%`;
    const bar = el("div", { class: "split", title });
    const left = el("div", { class: "split-stable" }, `v${stable}`);
    left.style.width = `${100 - weight}%`;
    bar.append(left);
    if (canary !== null && weight > 0) {
      const right = el("div", { class: "split-canary" }, `v${canary}`);
      right.style.width = `${weight}%`;
      bar.append(right);
    }
    return bar;
  }

  function renderRouting(data) {
    const cards = [];
    for (const [model, info] of sorted(data.models)) {
      const routing = info.routing;
      const guard = info.guardrails || {};
      const verdict = guard.verdict;
      const body = [];
      if (!routing) {
        body.push(
          el("p", { class: "unservable", "data-field": "unservable" }, "no version may take unpinned traffic: " + (info.unservable || "no ready version")),
        );
      } else {
        const canary = routing.canary;
        const weight = canary === null ? 0 : routing.canary_weight;
        const facts = ["stable ", el("b", { "data-field": "stable" }, "v" + routing.stable)];
        if (canary === null) {
          facts.push(" · no canary");
        } else {
          facts.push(
            " · canary ",
            el("b", { "data-field": "canary" }, "v" + canary),
            " at ",
            el("b", { "data-field": "canary_weight" }, fmtNumber(weight, weight % 1 ? 2 : 0) + " %"),
          );
        }
        body.push(el("p", { class: "facts" }, ...facts), splitBar(routing.stable, canary, weight));
        if ((routing.shadows || []).length) {
          body.push(
            el(
              "p",
              { class: "facts" },
              "shadows ",
              el("b", {}, routing.shadows.map((v) => "v" + v).join(", ")),
              ` (${fmtNumber(routing.shadow_sample * 100, 0)} % mirrored)`,
            ),
          );
        }
      }
      const action = verdict ? verdict.action : "";
      body.push(
        el(
          "p",
          { class: "guard guard-" + (guard.enabled ? action || "pending" : "off"), "data-field": "guardrails" },
          "guardrails ",
          el("b", {}, guard.enabled ? "on" : "off"),
          verdict ? ` · last verdict: ${verdict.action} (canary v${verdict.canary}): ${verdict.reason}` : "",
        ),
      );
      cards.push(
        el(
          "div",
          { class: "card model-card", "data-model": model },
          el("h3", {}, model, el("span", { class: "versions" }, " ready: " + (info.ready_versions || []).map((v) => "v" + v).join(", "))),
          ...body,
          ...Object.entries(info.gate_blocked || {}).map(([v, why]) =>
            el("p", { class: "gate-blocked", "data-field": "gate-blocked", "data-version": v }, `v${v} kept from traffic by its gate: ${why}`),
          ),
        ),
      );
    }
    show("routing", ...(cards.length ? cards : [el("p", { class: "empty" }, "no models")]));
  }

  function renderDrift(data) {
    const cards = [];
    for (const [endpoint, entry] of sorted(data.endpoints)) {
      const sections = Object.entries(entry.features || {});
      if (!sections.length) continue;
      const slash = endpoint.lastIndexOf("/");
      const blocks = sections.map(([section, features]) =>
        el(
          "div",
          { class: "drift-section" },
          el("h4", {}, section),
          el(
            "div",
            { class: "chips" },
            ...features.map((f) => {
              // The bar fills up to where PSI alone would alert: its threshold or its floor.
              const bound = f.threshold === null ? null : Math.max(f.threshold, f.psi_floor || 0);
              const ratio = f.psi !== null && bound ? Math.min(f.psi / bound, 1) : 0;
              const fill = el("div", { class: "fill" });
              fill.style.width = `${(ratio * 100).toFixed(1)}%`;
              const effect = f.auc === null || f.auc === undefined ? "" : ` · AUC ${fmtNumber(f.auc, 3)}`;
              const verdict = f.alert
                ? `significant and large by ${f.fired_by === "rank" ? "the rank test (AUC)" : f.fired_by === "psi" ? "PSI" : "PSI and the rank test"}: alert`
                : f.rows < (f.min_rows || 0)
                  ? `fewer rows than min_window (${f.min_rows}): no alert yet`
                  : f.significant
                  ? "significant but below the effect floors"
                  : "not significant";
              return el(
                "div",
                {
                  class: "feature" + (f.alert ? " alert" : ""),
                  "data-endpoint": endpoint,
                  "data-section": section,
                  "data-feature": f.name,
                  title:
                    `PSI ${fmtNumber(f.psi, 4)} (threshold ${fmtNumber(f.threshold, 4)}, floor ${fmtNumber(f.psi_floor, 3)})` +
                    (f.auc === null || f.auc === undefined
                      ? ""
                      : `, AUC ${fmtNumber(f.auc, 4)} (|AUC - 0.5| floor ${fmtNumber(f.auc_floor, 3)})`) +
                    `, p ${typeof f.pvalue === "number" && f.pvalue < 0.001 ? f.pvalue.toExponential(1) : fmtNumber(f.pvalue, 3)}, ${f.rows} rows in the window: ${verdict}`,
                },
                el("span", { class: "name" }, f.name),
                el("div", { class: "bar" }, fill),
                el(
                  "span",
                  { class: "psi" },
                  f.threshold === null ? "no rows" : `PSI ${fmtNumber(f.psi, 3)} / ${fmtNumber(bound, 3)}${effect}`,
                ),
              );
            }),
          ),
        ),
      );
      cards.push(
        el(
          "div",
          { class: "card drift-card" + (entry.drift_alert ? " alerting" : ""), "data-endpoint": endpoint },
          el(
            "h3",
            {},
            `${endpoint.slice(0, slash)} v${endpoint.slice(slash + 1)} `,
            el("span", { class: entry.drift_alert ? "badge bad" : "badge ok" }, entry.drift_alert ? "drift alert" : "no drift"),
          ),
          ...blocks,
        ),
      );
    }
    show("drift", ...(cards.length ? cards : [el("p", { class: "empty" }, "no version has a reference profile")]));
  }

  function summarize(before, after, cause) {
    if (typeof after === "string") return after;
    const parts = [];
    const routed = (x) => isObject(x) && "serving" in x;
    if (routed(before) || routed(after)) {
      // A routing record: who serves before → after (the state itself is in the file).
      const a = (routed(before) && before.serving) || {};
      const b = (routed(after) && after.serving) || {};
      const show = (v) => (v === null || v === undefined ? "–" : JSON.stringify(v));
      for (const key of ["stable", "canary", "canary_weight", "shadows"]) {
        if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) parts.push(`${key} ${show(a[key])} → ${show(b[key])}`);
      }
      if (routed(after) && before && after.pinned_stable !== before.pinned_stable) parts.push(`pinned stable v${after.pinned_stable}`);
      if (!parts.length) parts.push("no change in who serves");
      if (cause) parts.push(`(${cause})`);
      return parts.join("; ");
    }
    if (isObject(before) && isObject(after)) {
      for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
        if (key === "reason") continue;
        const a = JSON.stringify(before[key]);
        const b = JSON.stringify(after[key]);
        if (a !== b) parts.push(`${key} ${a ?? "–"} → ${b ?? "–"}`);
      }
      if (!parts.length) parts.push("no change");
    } else if (isObject(after)) {
      for (const [key, value] of Object.entries(after)) if (key !== "reason") parts.push(`${key}: ${JSON.stringify(value)}`);
    } else if (isObject(before)) {
      parts.push("was " + Object.entries(before).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", "));
    }
    if (isObject(after) && typeof after.reason === "string") parts.push(`(${after.reason})`);
    return parts.join("; ");
  }

  function renderAudit(entries) {
    if (!entries.length) {
      show("audit", el("p", { class: "empty" }, "no changes recorded"));
      return;
    }
    const rows = [...entries].reverse().map((e) =>
      el(
        "tr",
        { class: "audit-row", "data-action": e.action, "data-model": e.model, "data-actor": e.actor },
        el("td", { class: "time", title: e.time }, String(e.time || "").slice(11, 19)),
        el("td", {}, e.actor),
        el("td", {}, el("span", { class: "action action-" + String(e.action) }, e.action)),
        el("td", {}, e.model),
        el("td", { class: "summary" }, summarize(e.before, e.after, e.cause)),
      ),
    );
    const head = el("tr", {}, ...["UTC", "actor", "action", "model", "change"].map((h) => el("th", {}, h)));
    show("audit", el("table", { class: "audit" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  // ------------------------------------------------------------------ the stream
  function setState(state, text) {
    const badge = document.getElementById("status");
    badge.setAttribute("data-state", state);
    badge.textContent = text || state;
    document.body.classList.toggle("offline", state !== "live");
  }

  function onSnapshot(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // a malformed event: wait for the next one
    }
    lastEventAt = Date.now();
    setState("live");
    if (Array.isArray(data.latency_buckets)) buckets = data.latency_buckets;
    const roles = new Map();
    for (const [endpoint, entry] of Object.entries(data.endpoints || {})) {
      for (const [role, state] of Object.entries(entry.roles || {})) {
        const total = Object.values(state.requests || {}).reduce((a, b) => a + b, 0);
        roles.set(endpoint + SEP + role, { total, counts: state.duration_counts || [] });
      }
    }
    const now = { time: data.time, roles };
    snapshots.push(now);
    while (snapshots.length > 2 && now.time - snapshots[1].time >= WINDOW_S) snapshots.shift();
    renderTraffic(data, now);
    renderRouting(data);
    renderDrift(data);
    if (Array.isArray(data.audit)) renderAudit(data.audit);
    document.getElementById("updated").textContent =
      "updated " + new Date(data.time * 1000).toLocaleTimeString();
  }

  function connect() {
    retryTimer = null;
    setState("connecting", "connecting…");
    source = new EventSource(streamUrl);
    source.addEventListener("open", () => setState("live"));
    source.addEventListener("snapshot", onSnapshot);
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused for good (an HTTP error): the browser will not retry, so we do.
        source.close();
        if (retryTimer === null) retryTimer = setTimeout(connect, 2000);
      }
      setState("disconnected", "disconnected — reconnecting…");
    });
  }

  // A stream that stays open but sends nothing is as good as gone.
  setInterval(() => {
    const silent = (Date.now() - lastEventAt) / 1000;
    if (lastEventAt && silent > Math.max(5, 3 * interval)) {
      const badge = document.getElementById("status");
      if (badge.getAttribute("data-state") === "live") {
        setState("disconnected", `disconnected — no data for ${silent.toFixed(0)} s`);
      }
    }
  }, 1000);

  connect();
})();
