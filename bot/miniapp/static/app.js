// phantomdesk Mini App: screens over the desk's JSON API (/api). Every request carries the Telegram
// initData (tg.js); the server decides who may read or act. Text from the desk goes into the page as
// text nodes only (h() never parses HTML): a symbol or a reason cannot inject markup.
"use strict";

const POLL_MS = 10000;
const SCREENS = [
  ["overview", "Overview"], ["equity", "Equity"], ["trades", "Trades"], ["phantoms", "Phantoms"],
  ["recovery", "Recovery"], ["models", "Models"], ["risk", "Risk"], ["system", "System"],
];
const state = {
  me: null, screen: "overview", busy: false, chart: null,
  equity: { days: 0, bot: "" },
  trades: { bot: "", symbol: "", strategy: "", exit_reason: "", before: [], facets: null },
};

// --- small helpers ---------------------------------------------------------------------------------------------
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const DASH = "–";
const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const money = (x) => (x === null || x === undefined ? DASH : nf2.format(x));
const signed = (x) => (x === null || x === undefined ? DASH : (x > 0 ? "+" : "") + nf2.format(x));
const pct = (ratio) => (ratio === null || ratio === undefined ? DASH : (ratio * 100).toFixed(1) + "%");
const pctPlain = (x) => (x === null || x === undefined ? DASH : x.toFixed(1) + "%");
const num = (x, d = 2) => (x === null || x === undefined ? DASH : x.toFixed(d));
const rMult = (x) => (x === null || x === undefined ? DASH : (x > 0 ? "+" : "") + x.toFixed(2) + "R");
const price = (x) => (x === null || x === undefined ? DASH : String(+x.toPrecision(8)));
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : DASH);
const tone = (x) => (x > 0 ? "up" : x < 0 ? "down" : "");
const isAdmin = () => state.me && state.me.role === "admin";

function table(head, rows, opts = {}) {
  return h("div", { class: "scroll" }, h("table", { class: opts.class || "" },
    h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { class: (opts.right || []).includes(i) ? "r" : "" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", r.attrs || {}, (r.cells || r).map((c, i) =>
      h("td", { class: (opts.right || []).includes(i) ? "r" : "" }, c)))))));
}

function section(title, ...children) {
  return h("section", {}, h("h2", {}, title), ...children);
}

function toast(text, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, body) {
  const init = { headers: { Authorization: "tma " + window.tg.initData } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch("/api" + path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(data.error || res.statusText, res.status);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined && v !== 0) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// --- actions: ask, show what will happen, confirm ----------------------------------------------------------------
async function act(action, params) {
  let ask;
  try {
    ask = await api("/actions/" + action, params);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = ask.title;
  document.getElementById("confirm-lines").replaceChildren(...ask.lines.map((l) => h("li", {}, l)));
  const answer = await new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue);
    dialog.showModal();
  });
  try {
    const done = await api("/confirm", { action: ask.action, target: ask.target, token: ask.token,
                                         cancel: answer !== "yes" });
    toast([done.message, ...done.lines].join(" · "), !done.ok);
  } catch (e) {
    toast(e.message, true);
  }
  refresh();
}

function actionButton(label, action, params, cls = "") {
  if (!isAdmin()) return null;  // viewers get no controls; the server refuses them anyway
  return h("button", { class: "act " + cls, dataset: { action }, onclick: () => act(action, params) }, label);
}

// --- screens ---------------------------------------------------------------------------------------------------
async function overview() {
  const o = await api("/overview");
  state.me = o.me;
  const all = o.windows.find((w) => w.days === null).figures;
  const cards = h("div", { class: "cards" }, o.windows.map((w) => h("div", { class: "card", dataset: { window: w.label } },
    h("div", { class: "label" }, w.label),
    h("div", { class: "big " + tone(w.figures.net_pnl), dataset: { figure: "net_pnl" } }, signed(w.figures.net_pnl)),
    h("div", { class: "hint" }, w.figures.trades || !w.figures.newest_exit
      ? `${w.figures.trades} trades · ${pct(w.figures.win_rate)}`
      : `no trades; newest closed ${when(w.figures.newest_exit).slice(0, 10)}`))));
  const clock = h("p", { class: "hint" }, "trades closed in the last 24 h / 7 / 30 days by the wall clock (UTC), "
    + "as /stats N; a replay's trades carry their market's time");
  const figures = [
    ["Trades", "trades", `${all.trades}`], ["Win rate", "win_rate", pct(all.win_rate)],
    ["Net PnL", "net_pnl", money(all.net_pnl)], ["Profit factor", "profit_factor", num(all.profit_factor)],
    ["Expectancy", "expectancy_r", rMult(all.expectancy_r)],
    ["Max drawdown", "max_drawdown", `${money(all.max_drawdown)} (${pctPlain(all.max_drawdown_pct)})`],
    ["Sharpe / Sortino", "sharpe", `${num(all.sharpe)} / ${num(all.sortino)}` + ((all.return_days || 0) < o.min_ratio_days
      ? ` (${all.return_days || 0} days: too few to mean much)` : "")],
    ["Fees / funding", "fees", `${money(all.fees)} / ${signed(all.funding)}`],
  ];
  const kv = h("dl", { class: "kv", id: "all-time" }, figures.map(([label, key, value]) =>
    [h("dt", {}, label), h("dd", { dataset: { figure: key } }, value)]));
  const bots = o.bots.map((b) => h("article", { class: "bot", dataset: { bot: b.id } },
    h("div", { class: "row" },
      h("strong", {}, b.id),
      h("span", { class: "badge " + (b.status || ""), dataset: { status: b.status } }, b.status || "?"),
      h("span", { class: "hint" }, b.mode || ""),
      h("span", { class: "grow r" }, b.equity === null ? DASH : money(b.equity))),
    b.status !== "running" && (b.reason || b.since)
      ? h("div", { class: "hint reason" }, `${b.reason || ""}${b.since ? " · since " + when(b.since) + " UTC" : ""}`) : null,
    b.starting ? h("div", { class: "hint" }, "starting: restoring its state (figures follow in a moment)")
      : b.running_here ? null : h("div", { class: "hint" }, b.mode === "replay" ? "a replay's record, never traded"
        : "not running in this process" + (b.saved_at ? ` · equity as saved ${when(b.saved_at)} UTC` : "")),
    h("div", { class: "hint figures" }, `peak ${money(b.peak)} · dd ${pctPlain(b.drawdown_pct)} · today `,
      h("span", { class: tone(b.today), dataset: { figure: "today" } }, signed(b.today))),
    b.positions.length ? table(["symbol", "side", "qty", "entry", "last", "uPnL", ""], b.positions.map((p) => [
      p.symbol, p.side, price(p.qty), price(p.entry), price(p.last),
      h("span", { class: tone(p.unrealized) }, signed(p.unrealized)),
      actionButton("Close", "close", { symbol: p.symbol, bot: b.id }, "small danger")]), { right: [2, 3, 4, 5] })
      : h("div", { class: "hint" }, "no open positions"),
    isAdmin() && b.mode !== "replay" ? h("div", { class: "buttons" },
      b.status === "running" ? actionButton("Pause", "pause", { bot: b.id }) : actionButton("Resume", "resume", { bot: b.id }),
      b.positions.length ? actionButton("Close all", "close", { symbol: "all", bot: b.id }, "danger") : null) : null));
  return [section("PnL", cards, clock), section("All time", kv), section("Bots", bots.length ? bots : h("p", { class: "hint" }, "no bots"))];
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

async function equity(poll) {
  const e = await api("/equity" + query({ days: state.equity.days, bot: state.equity.bot }));
  const x = e.times_ms.map((t) => t / 1000);
  if (poll && state.chart) {  // new points, the operator's zoom kept
    state.chart.forEach((u, i) => u.setData([x, i ? e.drawdown_pct : e.equity], false));
    return null;
  }
  const ranges = h("div", { class: "buttons" }, [[7, "7 d"], [30, "30 d"], [90, "90 d"], [0, "All"]].map(([d, label]) =>
    h("button", { class: state.equity.days === d ? "on" : "", onclick: () => { state.equity.days = d; render(); } }, label)),
  h("button", { "aria-label": "zoom in", dataset: { zoom: "in" }, onclick: () => zoomX(0.5) }, "+"),
  h("button", { "aria-label": "zoom out", dataset: { zoom: "out" }, onclick: () => zoomX(2) }, "-"),
  h("button", { dataset: { zoom: "reset" }, onclick: () => zoomX(Infinity) }, "Reset zoom"));
  const top = h("div", { class: "chart", id: "equity-chart" });
  const bottom = h("div", { class: "chart small", id: "drawdown-chart" });
  const summary = h("p", { class: "hint" }, e.trades
    ? `${e.trades} closed trades from ${money(e.capital)} capital; pinch or +/- to zoom, swipe sideways to pan `
      + "(with a mouse: drag across a chart, double-click to reset)"
    : "no closed trades yet");
  requestAnimationFrame(() => drawEquity(top, bottom, x, e));
  return [section("Equity", ranges, top), section("Drawdown below the peak", bottom, summary)];
}

function drawEquity(top, bottom, x, e) {
  destroyChart();
  const hint = cssVar("--hint", "#888"), up = cssVar("--up", "#2e7d32"), down = cssVar("--down", "#d32f2f");
  const width = Math.max(280, top.clientWidth);
  const axis = { stroke: hint, grid: { stroke: hint + "33" }, ticks: { stroke: hint + "55" } };
  let syncing = false;  // a zoom on one pane zooms the other
  const opts = (height, series, yValues) => ({
    width, height, cursor: { drag: { x: true, y: false }, sync: { key: "equity" } }, scales: { x: { time: true } },
    axes: [{ ...axis }, { ...axis, size: 56, values: yValues }], series: [{}, series],
    hooks: { setScale: [(u, key) => {
      if (key !== "x") return;
      u.root.parentElement.dataset.xMin = u.scales.x.min;  // each pane's zoom, readable by a test
      u.root.parentElement.dataset.xMax = u.scales.x.max;
      if (syncing || !state.chart) return;
      syncing = true;
      state.chart.filter((o) => o !== u).forEach((o) => o.setScale("x", { min: u.scales.x.min, max: u.scales.x.max }));
      syncing = false;
    }] },
  });
  state.chart = [
    new window.uPlot(opts(220, { label: "equity", stroke: up, width: 2, value: (u, v) => money(v) },
      (u, v) => v.map((y) => y.toLocaleString("en-US"))), [x, e.equity], top),
    new window.uPlot(opts(130, { label: "drawdown", stroke: down, fill: down + "40", width: 1, value: (u, v) => pctPlain(v) },
      (u, v) => v.map((y) => y.toFixed(0) + "%")), [x, e.drawdown_pct], bottom),
  ];
  state.chart.forEach(touchZoom);
}

// zoom and pan over time, the same on both panes (the setScale hook syncs the other); uPlot itself knows
// only the mouse, so touch is handled here: two fingers pinch, one finger swiping sideways pans
function setX(min, max) {
  if (!state.chart) return;
  const u = state.chart[0], xs = u.data[0];
  if (xs.length < 2) return;
  const lo = xs[0], hi = xs[xs.length - 1], span = Math.min(max - min, hi - lo);
  if (!(span > 0)) return;
  min = Math.min(Math.max(min, lo), hi - span);
  u.setScale("x", { min, max: min + span });
}

function zoomX(factor) {
  if (!state.chart) return;
  const u = state.chart[0], xs = u.data[0];
  if (factor === Infinity) { setX(xs[0], xs[xs.length - 1]); return; }
  const { min, max } = u.scales.x, mid = (min + max) / 2, half = ((max - min) * factor) / 2;
  setX(mid - half, mid + half);
}

function touchZoom(u) {
  const over = u.over;
  let start = null;
  const xs = (e) => Array.from(e.touches, (t) => [t.clientX, t.clientY]);
  over.addEventListener("touchstart", (e) => {
    start = { at: xs(e), min: u.scales.x.min, max: u.scales.x.max };
  }, { passive: true });
  over.addEventListener("touchmove", (e) => {
    if (!start) return;
    const now = xs(e), width = over.getBoundingClientRect().width, left = over.getBoundingClientRect().left;
    const span0 = start.max - start.min;
    if (now.length === 2 && start.at.length === 2) {
      e.preventDefault();
      const d0 = Math.abs(start.at[0][0] - start.at[1][0]) || 1, d1 = Math.abs(now[0][0] - now[1][0]) || 1;
      const frac = ((start.at[0][0] + start.at[1][0]) / 2 - left) / width;
      const center = start.min + frac * span0, span = (span0 * d0) / d1;
      setX(center - frac * span, center - frac * span + span);
    } else if (now.length === 1 && start.at.length === 1) {
      const dx = now[0][0] - start.at[0][0], dy = now[0][1] - start.at[0][1];
      if (Math.abs(dx) <= Math.abs(dy)) return;  // a vertical swipe scrolls the page
      e.preventDefault();
      const shift = (-dx / width) * span0;
      setX(start.min + shift, start.max + shift);
    }
  }, { passive: false });
  over.addEventListener("touchend", (e) => { start = e.touches.length ? { at: xs(e), min: u.scales.x.min, max: u.scales.x.max } : null; });
}

function destroyChart() {
  if (state.chart) state.chart.forEach((u) => u.destroy());
  state.chart = null;
}

async function trades() {
  const t = state.trades;
  if (!t.facets) t.facets = await api("/trades/facets");
  const before = t.before[t.before.length - 1] || "";
  const page = await api("/trades" + query({ bot: t.bot, symbol: t.symbol, strategy: t.strategy,
                                              exit_reason: t.exit_reason, before, limit: 30 }));
  const select = (key, label, values) => h("label", {}, label, h("select", {
    name: key, onchange: (ev) => { t[key] = ev.target.value; t.before = []; render(); } },
  h("option", { value: "" }, "all"), values.map((v) => h("option", { value: v, selected: t[key] === v }, v))));
  const filters = h("div", { class: "filters" }, select("bot", "bot", t.facets.bots),
    select("symbol", "symbol", t.facets.symbols), select("strategy", "strategy", t.facets.strategies),
    select("exit_reason", "exit", t.facets.exit_reasons));
  const rows = page.rows.map((r) => ({ attrs: { dataset: { trade: r.id }, title: r.id }, cells: [
    when(r.exit_time).slice(5), h("span", {}, r.symbol.replace(/USDT$/, ""), " ", h("span", { class: "hint" }, r.side === "long" ? "L" : "S")),
    h("span", { class: "wrap" }, (r.strategy || DASH).replace(/_/g, " "), h("br"), h("span", { class: "hint" }, r.exit_reason || DASH)),
    rMult(r.realized_r), h("span", { class: tone(r.net_pnl) }, signed(r.net_pnl))] }));
  const pageNo = t.before.length + 1;
  const nav = h("div", { class: "buttons" },
    h("button", { disabled: pageNo === 1, onclick: () => { t.before.pop(); render(); } }, "← Newer"),
    h("span", { class: "hint grow", id: "trades-count" }, `${page.total.toLocaleString("en-US")} trades · page ${pageNo}`),
    h("button", { disabled: !page.more, onclick: () => { t.before.push(page.next); render(); } }, "Older →"));
  return [section("Trades", filters, rows.length ? table(["exit (UTC)", "symbol", "strategy / exit", "R", "PnL"], rows,
    { right: [3, 4] }) : h("p", { class: "hint" }, "no closed trades match"), nav)];
}

async function phantoms() {
  const p = await api("/phantoms");
  const row = (name, g) => g ? [name, `${g.total}`, pct(g.win_rate), rMult(g.avg_r), num(g.sum_r, 1)] : null;
  const blocks = p.strategies.map((s) => h("div", { class: "phantom", dataset: { strategy: s.strategy } },
    h("h3", {}, s.strategy),
    bars(s),
    table(["", "n", "win", "avg", "sum R"], [row("taken", s.executed), row("rejected", s.rejected),
      row("blocked", s.blocked), row("all", s.all)].filter(Boolean), { right: [1, 2, 3, 4] })));
  return [section("Phantoms: taken vs rejected vs blocked", blocks.length ? blocks : h("p", { class: "hint" }, "no closed phantoms yet"),
    h("p", { class: "hint" }, `what-if: the rejected signals would have made ${num(p.what_if_rejected_r, 1)} R`))];
}

function bars(s) {  // win rate per action, as a bar (the chat's /chart phantoms, in a line)
  const parts = [["taken", s.executed], ["rejected", s.rejected], ["blocked", s.blocked]].filter(([, g]) => g);
  return h("div", { class: "bars" }, parts.map(([name, g]) => {
    const fill = h("span", { class: "fill " + name });
    fill.style.width = Math.round((g.win_rate || 0) * 100) + "%";
    return h("div", { class: "bar" }, h("span", { class: "name" }, name), h("span", { class: "track" }, fill),
      h("span", { class: "r" }, pct(g.win_rate)));
  }));
}

async function recovery() {
  const items = await api("/recovery");
  const cards = items.map((i) => h("article", { class: "item" + (i.critical ? " critical" : ""), dataset: { item: i.id } },
    h("div", { class: "row" }, h("strong", {}, `#${i.id} ${i.kind}`), h("span", { class: "hint grow r" }, `bot ${i.bot_id || DASH}`)),
    i.critical ? h("div", { class: "down" }, "critical: the bot opens nothing new until this is decided") : null,
    i.warnings.map((w) => h("div", { class: "down" }, "⚠️ " + w)),
    h("dl", { class: "kv" }, Object.entries(i.details).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("div", { class: "hint" }, `raised ${when(i.created_at)} UTC · expires ${when(i.expires_at)} UTC`),
    h("ul", { class: "options" }, i.options.map((o) => h("li", {}, h("b", {}, o.name.replace(/_/g, " ")), ": ", o.meaning))),
    isAdmin() ? h("div", { class: "buttons" }, i.options.map((o) =>
      actionButton(o.name.replace(/_/g, " "), "decide", { item_id: i.id, option: o.name }))) : null));
  return [section("Recovery inbox", cards.length ? cards : h("p", { class: "hint" }, "no decision is waiting"))];
}

async function models() {
  const m = await api("/models");
  const row = (x) => [x.bot_id, x.strategy, `v${x.version}`, x.samples === null ? DASH : `${x.samples}`,
    num(x.challenger && x.challenger.brier, 4), num(x.challenger && x.challenger.auc, 3), rMult(x.challenger && x.challenger.lift_r)];
  const head = ["bot", "strategy", "ver", "n", "brier", "auc", "lift"];
  const newest = m.latest.filter((x) => !x.champion);
  const latest = newest.length ? [table(head, newest.map(row), { right: [3, 4, 5, 6] }), newest.map((x) => h("p", { class: "hint" },
    `${x.strategy} v${x.version} (${x.bot_id}): ${x.promoted ? "promoted" : "refused"}${x.why ? " — " + x.why : ""}`))] : [];
  const pending = m.pending.map((p) => h("article", { class: "item", dataset: { promotion: `${p.strategy}-${p.version}` } },
    h("div", {}, `${p.bot_id} ${p.strategy} v${p.version} refused by the gate: ${p.why || ""}`),
    isAdmin() ? h("div", { class: "buttons" },
      actionButton("Promote anyway", "promote", { bot: p.bot_id, strategy: p.strategy, version: p.version }),
      actionButton("Dismiss", "decide", { item_id: p.item_id, option: "dismiss" })) : null));
  const retrain = isAdmin() ? h("div", { class: "buttons" }, actionButton("Retrain now", "retrain", {}),
    h("span", { class: "hint" }, "challengers face the gate; the verdicts follow in the chat")) : null;
  return [section("Champions", retrain, m.champions.length ? table(head, m.champions.map(row), { right: [3, 4, 5, 6] })
    : h("p", { class: "hint" }, "no champion model yet: signals are taken unscored")),
  section("Newest challengers", latest.length ? latest : h("p", { class: "hint" }, "no challenger beyond the champions")),
  section("Pending challengers", pending.length ? pending : h("p", { class: "hint" }, "none waiting"))];
}

function bytes(n) {
  if (n === null || n === undefined) return DASH;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

async function system() {
  const s = await api("/system");
  const health = h("dl", { class: "kv" }, [["status", s.status], ["database", s.database], ["redis", s.redis],
    ["feed", s.feed]].map(([k, v]) => [h("dt", {}, k), h("dd", { class: k === "status" && v !== "ok" ? "down" : "" }, v || DASH)]));
  const faults = s.faults.map((f) => h("p", { class: "down" }, f));
  const jobs = table(["job", "last", "ran (UTC)", "next (UTC)"], s.jobs.map((j) => ({
    attrs: { title: j.last_error || "", dataset: { job: j.job_id } }, cells: [
      h("span", { class: "wrap" }, j.job_id.replace(/_/g, " ")),
      h("span", { class: j.last_status === "failed" ? "down" : "" }, (j.last_status || "not run")
        + (j.consecutive_failures ? ` ×${j.consecutive_failures}` : "")),
      j.last_run ? when(j.last_run).slice(5) : DASH, j.next_run ? when(j.next_run).slice(5) : DASH] })));
  const st = s.storage;
  const storage = h("dl", { class: "kv" }, [["database", bytes(st.db_bytes)],
    ["growth / day", st.db_growth_bytes_per_day === null ? DASH : bytes(st.db_growth_bytes_per_day)],
    ["free disk", st.disk_free_pct === null ? DASH : `${st.disk_free_pct.toFixed(1)}% (${bytes(st.disk_free_bytes)})`],
    ["journal backlog", st.journal_backlog === null ? DASH : `${st.journal_backlog}`],
    ["candles", `${s.candles.toLocaleString("en-US")} (${s.candle_gaps} gaps)`]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const alerts = st.alerts.map((a) => h("p", { class: "down" }, a));
  const rows = table(["table", "rows"], Object.entries(s.rows).map(([k, v]) => [k, v.toLocaleString("en-US")]), { right: [1] });
  return [section("Health", health, faults), section("Jobs", s.jobs.length ? jobs : h("p", { class: "hint" }, "no job listed")),
    section("Storage", storage, alerts, rows)];
}

async function risk() {
  const bots = await api("/risk");
  // a row per setting, its input beside it: nothing to scroll sideways at 360 px
  const blocks = bots.map((b) => h("div", { class: "phantom", dataset: { risk: b.bot_id } }, h("h3", {}, b.bot_id),
    b.settings.map((r) => {
      const range = (r.low_open ? `above ${r.low}, at most ${r.high}` : `${r.low}–${r.high}`)
        + (r.danger === null ? "" : ` · ⚠️ from ${r.danger}`);
      let control = null;
      if (isAdmin()) {
        const input = h("input", { type: "text", inputmode: "decimal", name: r.key, "aria-label": r.key,
                                   value: r.value === null ? "" : String(r.value) });
        control = h("span", { class: "set" }, input, h("button", { class: "act small", dataset: { action: "risk" },
          onclick: () => act("risk", { key: r.key, value: input.value.trim(), bot: b.bot_id }) }, "Set"));
      }
      return h("div", { class: "setting", dataset: { key: r.key } },
        h("div", {}, h("div", {}, r.key.replace(/_/g, " "), " ",
          h("b", { dataset: { value: r.key } }, r.value === null ? DASH : String(r.value))),
        h("div", { class: "hint small" }, range)),
        control);
    })));
  return [section("Risk", blocks.length ? blocks : h("p", { class: "hint" }, "no bots"),
    h("p", { class: "hint" }, "a change is confirmed first and applies to the bot's next signals, as /risk set"))];
}

const RENDER = { overview, equity, trades, phantoms, recovery, models, risk, system };

// --- the shell -------------------------------------------------------------------------------------------------
async function render(poll = false) {
  if (state.busy) return;
  state.busy = true;
  const view = document.getElementById("view");
  try {
    if (!state.me) state.me = await api("/me");
    document.getElementById("who").textContent = `${state.me.name} · ${state.me.role}`;
    if (state.screen !== "equity") destroyChart();
    const content = await RENDER[state.screen](poll);
    if (content) view.replaceChildren(...content);
    document.getElementById("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.ready = state.screen;
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      view.replaceChildren(h("p", { class: "denied" }, window.tg.initData
        ? "⛔ not authorized: your Telegram account is not on this desk"
        : "Open this page from the desk's bot in Telegram (its menu button or /status)."));
      document.body.dataset.ready = "denied";
    } else if (!poll) {
      view.replaceChildren(h("p", { class: "down" }, "could not load: " + e.message));
    }
  } finally {
    state.busy = false;
  }
}

function refresh() { render(true); }

function tabs() {
  const nav = document.getElementById("tabs");
  nav.replaceChildren(...SCREENS.map(([key, label]) => h("button", {
    class: key === state.screen ? "on" : "", dataset: { screen: key },
    onclick: () => { state.screen = key; tabs(); render(); } }, label)));
}

document.addEventListener("DOMContentLoaded", () => {
  window.tg.ready();
  tabs();
  render();
  setInterval(() => {  // numbers refresh without reloading; not while a confirmation is open
    const typing = document.activeElement && document.activeElement.tagName === "INPUT";  // keep what is typed
    if (document.visibilityState === "visible" && !document.getElementById("confirm").open && !typing) refresh();
  }, POLL_MS);
  document.addEventListener("tg-theme", () => state.screen === "equity" && render());
});
