// keygate console: partners, keys, audit log and traffic, through the admin
// API only. Every value from the server reaches the page as text (the
// `el` helper below sets textContent, never innerHTML), and the admin
// token lives in this tab's sessionStorage: not a cookie, not the URL, not
// localStorage, gone when the tab closes.
"use strict";

const TOKEN_KEY = "keygate-admin-token";
let token = sessionStorage.getItem(TOKEN_KEY);
let refreshTimer = null;

// ---------- DOM helpers: text only ----------

/** el("td", {class: "id"}, "text", childNode, ...): strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("shown"), 2500);
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied`);
  } catch {
    toast(`Select the ${what.toLowerCase()} and copy it by hand`);
  }
}

function copyButton(text, what) {
  return el("button", { type: "button", class: "quiet small", "aria-label": `Copy ${what.toLowerCase()}`,
    onclick: () => copy(text, what) }, "Copy");
}

// ---------- times: local, with UTC on hover ----------

function timeEl(iso) {
  if (!iso) return el("span", { class: "hint" }, "never");
  const date = new Date(iso);
  return el("time", { datetime: iso, title: `${date.toISOString().replace(".000Z", "Z")} (UTC)` },
    date.toLocaleString());
}

function untilText(iso) {
  const seconds = Math.round((new Date(iso) - Date.now()) / 1000);
  if (seconds <= 0) return "now";
  const units = [["d", 86400], ["h", 3600], ["min", 60]];
  for (const [unit, size] of units) if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`;
  return `${seconds} s`;
}

// ---------- the admin API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "keygate did not answer: is it running, and is this its admin address?");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.status === 401) {
    signOut("The admin token was not accepted: it is wrong, or it was changed on the server. Sign in again.");
    throw new ApiError(401, data?.error?.code, "signed out");
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.code, data?.error?.message || `HTTP ${response.status}`);
  }
  return data;
}

// ---------- sign in and out ----------

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(refreshTimer);
  document.getElementById("view").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
  document.getElementById("token").value = "";
  document.getElementById("token").focus();
}

async function signIn(candidate) {
  token = candidate;
  const error = document.getElementById("sign-in-error");
  error.textContent = "";
  try {
    await api("GET", "/admin/apps");
  } catch (e) {
    if (e.status !== 401) error.textContent = e.message;
    token = null;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("view").hidden = false;
  route();
}

// ---------- views ----------

function view(...children) {
  const section = document.getElementById("view");
  section.replaceChildren(...children);
  return section;
}

function failure(e) {
  if (e.status === 401) return;
  view(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert" }, e.message));
}

function statusBadge(key) {
  let text = key.status;
  if (key.status === "expiring") text = `expiring · ${untilText(key.expires_at)} left`;
  return el("span", { class: `status ${key.status}` }, text);
}

/** "2 routes · 1 network · 5/s (burst 10)", the JSON on hover. */
function policySummary(policy) {
  const parts = [];
  if (policy.rules) parts.push(policy.rules.length ? `${policy.rules.length} route${policy.rules.length > 1 ? "s" : ""}` : "no routes");
  if (policy.source_cidrs) parts.push(`${policy.source_cidrs.length} network${policy.source_cidrs.length === 1 ? "" : "s"}`);
  if (policy.rate_limit) parts.push(`${policy.rate_limit.per_second}/s (burst ${policy.rate_limit.burst})`);
  if (!parts.length) return el("span", { class: "hint" }, "none");
  return el("span", { title: JSON.stringify(policy) }, parts.join(" · "));
}

async function partnersView() {
  // One call: the listing counts each partner's keys itself.
  const { apps } = await api("GET", "/admin/apps");
  const rows = apps.map((app) => ({ app, total: app.key_count ?? 0, live: app.live_key_count ?? 0, lastUsed: app.last_used_at || null }));
  const tbody = el("tbody");
  const search = el("input", { type: "search", id: "partner-search", placeholder: "Name or id",
    "aria-label": "Search partners" });
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = rows.filter(({ app }) =>
      !needle || app.name.toLowerCase().includes(needle) || app.app_id.toLowerCase().includes(needle));
    tbody.replaceChildren(...shown.map(({ app, total, live, lastUsed }) => el("tr", {},
      el("td", {}, el("a", { href: `#/partners/${encodeURIComponent(app.app_id)}` }, app.name)),
      el("td", { class: "id mono" }, app.app_id),
      el("td", {}, `${live} live / ${total}`),
      el("td", {}, timeEl(lastUsed)),
      el("td", {}, timeEl(app.created_at)))));
    if (shown.length === 0) {
      tbody.append(el("tr", {}, el("td", { colspan: 5, class: "hint" },
        rows.length ? "No partner matches." : "No partners yet: create the first one above.")));
    }
  };
  search.addEventListener("input", render);
  const name = el("input", { id: "new-partner-name", name: "name", required: true, maxlength: 200 });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { id: "create-partner" },
    el("div", { class: "field" }, el("label", { for: "new-partner-name" }, "New partner's name"), name),
    el("button", { type: "submit" }, "Create partner"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const app = await api("POST", "/admin/apps", { name: name.value });
      location.hash = `#/partners/${encodeURIComponent(app.app_id)}`;
    } catch (e) { error.textContent = e.message; }
  });
  render();
  view(
    el("h1", {}, "Partners"),
    form, error,
    el("div", { class: "field" }, el("label", { for: "partner-search" }, "Search"), search),
    el("div", { class: "table-wrap" }, el("table", { id: "partners" },
      el("thead", {}, el("tr", {}, ["Partner", "Id", "Keys", "Last activity", "Created"].map((h) => el("th", { scope: "col" }, h)))),
      tbody)));
}

/** The one place a secret is shown: removed from the DOM when dismissed. */
function secretPanel(key, intro) {
  const panel = el("div", { class: "secret", id: "secret-panel", role: "alert" },
    el("strong", {}, "Copy this secret now. It is shown only this once: keygate keeps it encrypted and cannot show it again."),
    intro ? el("p", {}, intro) : null,
    el("div", { class: "value" }, el("span", {}, "Key id"), el("code", { id: "new-key-id" }, key.key_id),
      copyButton(key.key_id, "Key id")),
    el("div", { class: "value" }, el("span", {}, "Secret"), el("code", { id: "new-secret" }, key.secret),
      copyButton(key.secret, "Secret")),
    el("button", { type: "button", id: "dismiss-secret", onclick: () => panel.remove() },
      "I have stored it: hide the secret"));
  return panel;
}

function confirmDialog(title, body, confirmLabel, danger, extra) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { "aria-labelledby": "dialog-title" },
      el("h2", { id: "dialog-title" }, title),
      ...body,
      el("form", { method: "dialog" },
        extra || null,
        el("button", { type: "submit", value: "cancel", class: "quiet" }, "Cancel"),
        el("button", { type: "submit", value: "ok", class: danger ? "danger" : "", id: "dialog-confirm" }, confirmLabel)));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? dialog : null);
      setTimeout(() => dialog.remove(), 0);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

const GRACE_CHOICES = [["0", "immediately"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"], ["2592000", "30 days"]];

async function partnerView(appId) {
  const [{ apps }, { keys }, appPolicy] = await Promise.all([
    api("GET", "/admin/apps"),
    api("GET", `/admin/apps/${encodeURIComponent(appId)}/keys`),
    api("GET", `/admin/apps/${encodeURIComponent(appId)}/policy`),
  ]);
  const app = apps.find((a) => a.app_id === appId);
  if (!app) throw new ApiError(404, "app_not_found", `No partner with id ${appId}`);
  const notice = el("div", { id: "notice" });
  const error = el("p", { class: "error", role: "alert" });

  const rotate = async (key) => {
    const grace = el("select", { id: "grace", "aria-label": "Old key keeps working for" },
      GRACE_CHOICES.map(([value, label]) => el("option", { value, selected: value === "86400" }, label)));
    const done = await confirmDialog(`Rotate key ${key.key_id}?`,
      [el("p", {}, `A new key is created for ${app.name}. The old key keeps working for the time you choose, so the partner can deploy the new secret.`),
        el("label", { for: "grace" }, "Old key keeps working for"), grace],
      "Rotate", false);
    if (!done) return;
    try {
      const fresh = await api("POST", `/admin/keys/${encodeURIComponent(key.key_id)}/rotate`,
        { grace_seconds: Number(grace.value) });
      const old = await api("GET", `/admin/keys/${encodeURIComponent(key.key_id)}`);
      await partnerView(appId);
      const ends = old.expires_at ? new Date(old.expires_at) : null;
      document.getElementById("notice").replaceChildren(secretPanel(fresh,
        ends ? `The old key ${key.key_id} stops working at ${ends.toLocaleString()} (${untilText(old.expires_at)} from now).`
          : `The old key ${key.key_id} keeps working.`));
    } catch (e) { error.textContent = e.message; }
  };

  const revoke = async (key) => {
    const done = await confirmDialog(`Revoke key ${key.key_id} of ${app.name}?`,
      [el("p", {}, `Every request signed with ${key.key_id}${key.name ? ` (${key.name})` : ""} of partner ${app.name} is refused from the next one on. This cannot be undone.`)],
      "Revoke key", true);
    if (!done) return;
    try {
      await api("POST", `/admin/keys/${encodeURIComponent(key.key_id)}/revoke`);
      await partnerView(appId);
      toast(`${key.key_id} revoked`);
    } catch (e) { error.textContent = e.message; }
  };

  const keyName = el("input", { id: "new-key-name", maxlength: 200, placeholder: "ERP sync, prod" });
  const keyExpiry = el("input", { id: "new-key-expires", type: "datetime-local" });
  const createKey = el("form", { id: "create-key" },
    el("div", { class: "field" }, el("label", { for: "new-key-name" }, "Label (optional)"), keyName),
    el("div", { class: "field" }, el("label", { for: "new-key-expires" }, "Expires (optional, your local time)"), keyExpiry),
    el("button", { type: "submit" }, "Create key"));
  createKey.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = {};
    if (keyName.value.trim()) body.name = keyName.value.trim();
    if (keyExpiry.value) body.expires_at = new Date(keyExpiry.value).toISOString();
    try {
      const key = await api("POST", `/admin/apps/${encodeURIComponent(appId)}/keys`, body);
      await partnerView(appId);
      document.getElementById("notice").replaceChildren(secretPanel(key, null));
    } catch (e) { error.textContent = e.message; }
  });

  const rows = keys.map((key) => el("tr", { "data-key-id": key.key_id },
    el("td", { class: "id" }, el("code", {}, key.key_id), " ", copyButton(key.key_id, "Key id")),
    el("td", { class: "key-status" }, statusBadge(key)),
    el("td", {}, key.name || el("span", { class: "hint" }, "—")),
    el("td", {}, timeEl(key.created_at)),
    el("td", { class: "key-expires" }, key.expires_at ? timeEl(key.expires_at) : el("span", { class: "hint" }, "never")),
    el("td", {}, timeEl(key.last_used_at)),
    el("td", { class: "key-policy" }, policySummary(key.policy || {})),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "quiet small", disabled: key.status === "revoked" || key.status === "expired",
        onclick: () => rotate(key) }, "Rotate"),
      el("button", { type: "button", class: "danger small", disabled: key.status === "revoked",
        onclick: () => revoke(key) }, "Revoke"))));

  view(
    el("p", {}, el("a", { href: "#/partners" }, "← All partners")),
    el("h1", {}, app.name),
    el("div", { class: "meta" },
      el("span", {}, "Id ", el("code", {}, app.app_id), " ", copyButton(app.app_id, "Partner id")),
      el("span", {}, "Created ", timeEl(app.created_at))),
    notice,
    el("h2", {}, "Keys"),
    createKey, error,
    el("div", { class: "table-wrap" }, el("table", { id: "keys" },
      el("thead", {}, el("tr", {}, ["Key id", "Status", "Label", "Created", "Expires", "Last used", "Policy", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 8, class: "hint" }, "No keys yet."))))),
    el("h2", {}, "Access policy"),
    el("p", { class: "hint" }, "The partner's policy; each key's own (in the table) narrows it. Set with PUT /admin/apps/{id}/policy and /admin/keys/{id}/policy, or keygate app policy / key policy; {} means no restriction."),
    el("pre", { class: "policy" }, JSON.stringify(appPolicy, null, 2)),
    el("p", {}, el("a", { href: `#/audit?app=${encodeURIComponent(appId)}` }, "This partner's audit log")));
}

async function auditView(params) {
  const [{ events }, { apps }] = await Promise.all([api("GET", "/admin/audit?limit=1000"), api("GET", "/admin/apps")]);
  const names = new Map(apps.map((a) => [a.app_id, a.name]));
  const partner = el("select", { id: "audit-partner" }, el("option", { value: "" }, "All partners"),
    apps.map((a) => el("option", { value: a.app_id, selected: a.app_id === params.get("app") }, a.name)));
  const key = el("input", { id: "audit-key", type: "search", placeholder: "pk_…", value: params.get("key") || "" });
  const tbody = el("tbody");
  const render = () => {
    const shown = events.filter((e) => (!partner.value || e.app_id === partner.value)
      && (!key.value.trim() || (e.key_id || "").includes(key.value.trim())));
    tbody.replaceChildren(...shown.map((e) => el("tr", {},
      el("td", {}, timeEl(e.at)),
      el("td", { class: "mono" }, e.action),
      el("td", {}, e.actor, e.instance ? el("div", { class: "hint" }, e.instance) : null),
      el("td", {}, e.app_id ? (names.get(e.app_id) || e.app_id) : "—"),
      el("td", { class: "id mono" }, e.key_id || "—"),
      el("td", { class: "detail mono" }, e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : ""))));
    if (!shown.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "hint" }, "No events match.")));
  };
  partner.addEventListener("change", render);
  key.addEventListener("input", render);
  render();
  view(el("h1", {}, "Audit log"),
    el("p", { class: "hint" }, "Every change, newest first: who asked (the admin API caller or the CLI user) and which keygate process made it."),
    el("form", { id: "audit-filter", onsubmit: (e) => e.preventDefault() },
      el("div", { class: "field" }, el("label", { for: "audit-partner" }, "Partner"), partner),
      el("div", { class: "field" }, el("label", { for: "audit-key" }, "Key id"), key)),
    el("div", { class: "table-wrap" }, el("table", { id: "audit" },
      el("thead", {}, el("tr", {}, ["When", "Change", "Who", "Partner", "Key", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
      tbody)));
}

const RESULT_COLOURS = {
  accepted: "#1e7d3a", signature_mismatch: "#b3261e", timestamp_out_of_range: "#9a6100",
  nonce_reused: "#7b3fa0", unknown_key: "#5b6475", key_revoked: "#8c1d18", key_expired: "#6d6d6d",
  forbidden: "#c2410c", forbidden_source: "#a16207", rate_limited: "#0e7490", unavailable: "#111827",
};
const OTHER_COLOURS = ["#2457c5", "#db2777", "#4d7c0f", "#0891b2", "#9333ea", "#ca8a04"];

function colourOf(result, index) {
  return RESULT_COLOURS[result] || OTHER_COLOURS[index % OTHER_COLOURS.length];
}

async function trafficView() {
  const traffic = await api("GET", "/admin/traffic");
  const buckets = traffic.buckets;
  const totals = new Map();
  for (const bucket of buckets) for (const [result, n] of Object.entries(bucket.results)) totals.set(result, (totals.get(result) || 0) + n);
  const results = [...totals.keys()].sort((a, b) => (a === "accepted" ? -1 : b === "accepted" ? 1 : totals.get(b) - totals.get(a)));

  // A fixed window ending now, one slot per interval, so the picture is
  // the same shape however long this keygate has been up.
  const width = 900, height = 200, pad = 4, windowSeconds = 15 * 60;
  const slots = windowSeconds / traffic.interval_seconds;
  const slot = width / slots;
  const end = buckets.length ? buckets[buckets.length - 1].end : Date.now() / 1000;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
    "aria-label": "Signed requests by result over the last 15 minutes, per interval" });
  const max = Math.max(1, ...buckets.map((b) => Object.values(b.results).reduce((s, n) => s + n, 0)));
  buckets.forEach((bucket) => {
    const i = slots - 1 - Math.floor((end - bucket.end) / traffic.interval_seconds);
    if (i < 0) return;
    let y = height;
    results.forEach((result, r) => {
      const n = bucket.results[result] || 0;
      if (!n) return;
      const h = Math.max(1, (n / max) * (height - pad));
      y -= h;
      const rect = svg("rect", { x: i * slot + 1, y, width: Math.max(1, slot - 2), height: h, fill: colourOf(result, r) });
      const title = svg("title");
      title.textContent = `${result}: ${n} (${new Date(bucket.start * 1000).toLocaleTimeString()}–${new Date(bucket.end * 1000).toLocaleTimeString()})`;
      rect.append(title);
      chart.append(rect);
    });
  });

  const legend = el("ul", { class: "legend", id: "traffic-legend" }, results.map((result, r) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colourOf(result, r);
    return el("li", { "data-result": result }, swatch, `${result} ${totals.get(result)}`);
  }));
  const refused = results.filter((r) => r !== "accepted");
  const minutes = Math.round((buckets.length * traffic.interval_seconds) / 60);
  view(el("h1", {}, "Traffic"),
    el("p", { class: "hint" }, `Signed requests by result in ${traffic.interval_seconds} s steps, as this keygate process counted them; its counts cover the last ${minutes || 1} min (refreshed every 5 s).`),
    totals.size ? chart : el("p", { class: "hint" }, "No signed requests yet."),
    totals.size ? el("div", { class: "axis" }, el("span", {}, "15 min ago"), el("span", {}, "now")) : null,
    legend,
    refused.length
      ? el("p", { id: "traffic-refusals" }, "Refused: ", refused.map((r) => `${r} ${totals.get(r)}`).join(", "),
        refused.includes("signature_mismatch") ? " — a partner signing wrongly: see the partner's string_to_sign in their error answers." : "",
        refused.includes("timestamp_out_of_range") ? " — a partner's clock is off." : "")
      : el("p", { id: "traffic-refusals", class: "hint" }, "No refusals."),
    el("div", { class: "table-wrap" }, el("table", { id: "traffic-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Result"), el("th", { scope: "col" }, "Requests"))),
      el("tbody", {}, results.map((r) => el("tr", {}, el("td", { class: "mono" }, r), el("td", {}, String(totals.get(r)))))))));
}

// ---------- routing ----------

async function route() {
  if (!token) return;
  clearInterval(refreshTimer);
  const [path, query] = (location.hash.slice(1) || "/partners").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "partners";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (section === "partners" && parts[1]) await partnerView(decodeURIComponent(parts[1]));
    else if (section === "audit") await auditView(params);
    else if (section === "traffic") {
      await trafficView();
      refreshTimer = setInterval(() => trafficView().catch(failure), 5000);
    } else await partnersView();
  } catch (e) { failure(e); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn(document.getElementById("token").value.trim());
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  if (token) signIn(token);
  else document.getElementById("token").focus();
});
