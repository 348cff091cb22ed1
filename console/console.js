// credit-sentinel console: the hold queue, customer positions, top accounts and a live feed of
// committed decisions and alerts, over the engine's own /v1 API. No framework, no build step.
// Every value from the server is put in the page as text (textContent), never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "credit-sentinel.token";
  const REASONS = ["CUSTOMER_UNKNOWN", "ACCOUNT_BLOCKED", "PREPAYMENT_REQUIRED", "ORDER_LIMIT_EXCEEDED",
    "LIMIT_EXPIRED", "OVERDUE_DAYS", "OVERDUE_AMOUNT", "CREDIT_LIMIT_EXCEEDED", "GROUP_LIMIT_EXCEEDED",
    "AMOUNT_ANOMALY", "CURRENCY_MISMATCH", "HOLD_EXPIRED", "MANUAL"];
  const FEED_MAX = 100;

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let me = null;
  let view = "holds";
  let customer = null;
  let streamAbort = null;
  let topTimer = null;
  const timers = {};
  // Orders this tab sent a release or rejection for, until the engine's decision arrives.
  const sent = new Set();

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function status(text, kind) {
    const s = $("status");
    s.textContent = text || "";
    s.className = "status" + (kind ? " " + kind : "");
  }

  function later(name, ms, fn) {
    clearTimeout(timers[name]);
    timers[name] = setTimeout(fn, ms);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || "HTTP " + status);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: "Bearer " + token };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (r.status === 401) {
      signOut("Your token was not accepted: sign in again.");
      throw new ApiError(401, body);
    }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  const money = (amount, currency) => amount === null || amount === undefined ? "–" : amount + (currency ? " " + currency : "");
  const pct = (u) => u === null || u === undefined ? "–" : (Number(u) * 100).toFixed(1) + " %";
  const when = (t) => t ? t.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC") : "–";

  // ---- sign-in -------------------------------------------------------------------------------

  async function signIn(candidate) {
    token = candidate;
    try {
      me = await api("/v1/me");
    } catch (e) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("sign-in-error").textContent = e.status === 401 ? "That token is not known to this engine." : "Cannot sign in: " + e.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    status("");
    $("sign-in-error").textContent = "";
    $("token").value = "";
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = me.name + " · " + me.role;
    const canAct = me.role === "approver" || me.role === "admin";
    $("role-note").hidden = canAct;
    $("role-note").textContent = canAct ? "" : "Signed in as a viewer: releasing and rejecting holds needs the approver role.";
    show("holds");
    loadFeed();
  }

  function signOut(message) {
    token = null;
    me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
    clearInterval(topTimer);
    $("app").hidden = true;
    $("who").hidden = true;
    $("sign-in").hidden = false;
    $("feed").replaceChildren();
    $("holds-body").replaceChildren();
    status(message || "", message ? "bad" : "");
    $("token").focus();
  }

  // ---- views ---------------------------------------------------------------------------------

  function show(name) {
    view = name;
    for (const v of ["holds", "top", "customer"]) $("view-" + v).hidden = v !== name;
    for (const b of document.querySelectorAll(".tab")) {
      if (b.dataset.view === name) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }
    clearInterval(topTimer);
    if (name === "holds") loadHolds();
    if (name === "top") { loadTop(); topTimer = setInterval(loadTop, 5000); }
    if (name === "customer" && customer) loadCustomer(customer);
  }

  function openCustomer(id) {
    customer = id;
    $("customer-tab").hidden = false;
    $("customer-tab").textContent = "Customer " + id;
    show("customer");
    $("main").focus();
  }

  function customerLink(id) {
    return el("button", { type: "button", class: "link", onclick: () => openCustomer(id), "aria-label": "Open customer " + id }, id);
  }

  // ---- hold queue ----------------------------------------------------------------------------

  function holdQuery() {
    const q = new URLSearchParams({ limit: "200" });
    for (const [k, v] of new FormData($("hold-filter"))) if (v.trim()) q.set(k, v.trim());
    return q;
  }

  async function loadHolds() {
    let page;
    try {
      page = await api("/v1/holds?" + holdQuery());
    } catch (e) {
      if (e.status !== 401) status("Cannot load the hold queue: " + e.message, "bad");
      return;
    }
    $("holds-count").textContent = String(page.total);
    $("holds-empty").hidden = page.items.length > 0;
    $("holds-body").replaceChildren(...page.items.map(holdRow));
  }

  function holdRow(h) {
    const canAct = me && (me.role === "approver" || me.role === "admin");
    const reasons = el("ul", { class: "reasons" }, ...h.reasons.map((r) =>
      el("li", {}, el("span", { class: "code" }, r.code), el("span", { class: "detail" }, r.detail))));
    const noteId = "note-" + h.order_id;
    const note = el("input", { id: noteId, name: "note", placeholder: "Note (required)", disabled: !canAct, maxlength: "500" });
    const mine = h.first_approver && me && h.first_approver === me.name;
    const release = el("button", {
      type: "button", disabled: !canAct || mine, "aria-label": "Release " + h.order_id,
      title: mine ? "You asked first: a second approver must confirm" : null,
      onclick: () => act(h, "release", note),
    }, "Release");
    const reject = el("button", {
      type: "button", class: "danger", disabled: !canAct, "aria-label": "Reject " + h.order_id,
      onclick: () => act(h, "reject", note),
    }, "Reject");
    const asked = h.first_approver
      ? el("span", { class: "asked" }, "Release asked by " + h.first_approver + "; a second approver must confirm.")
      : null;
    return el("tr", { "data-order-id": h.order_id },
      el("td", {}, when(h.held_at)),
      el("td", {}, h.order_id),
      el("td", {}, customerLink(h.customer_id)),
      el("td", { class: "num" }, money(h.amount, h.currency)),
      el("td", {}, reasons),
      el("td", {}, el("div", { class: "act" },
        el("label", { for: noteId, class: "detail" }, "Note for " + h.order_id),
        note, el("div", { class: "buttons" }, release, reject), asked)));
  }

  async function act(hold, what, noteInput) {
    const note = noteInput.value.trim();
    if (!note) {
      status("Write a note first: every release and rejection is explained.", "bad");
      noteInput.focus();
      return;
    }
    try {
      const r = await api("/v1/holds/" + encodeURIComponent(hold.order_id) + "/" + what, { method: "POST", body: { note } });
      sent.add(hold.order_id);
      status((what === "release" ? "Release" : "Rejection") + " of " + hold.order_id + " sent (" + r.command_id + "); waiting for the engine's decision.", "ok");
      const row = document.querySelector('tr[data-order-id="' + CSS.escape(hold.order_id) + '"]');
      if (row) for (const b of row.querySelectorAll("button")) b.disabled = true;
    } catch (e) {
      if (e.status !== 401) status("Not sent: " + e.message, "bad");
    }
  }

  // ---- top accounts --------------------------------------------------------------------------

  async function loadTop() {
    let page;
    try {
      page = await api("/v1/accounts/top?by=utilization&limit=25");
    } catch (e) {
      if (e.status !== 401) status("Cannot load top accounts: " + e.message, "bad");
      return;
    }
    $("top-body").replaceChildren(...page.items.map((a) => {
      const u = Number(a.utilization || 0);
      const bar = el("span", { class: "bar" + (u >= 1 ? " hot" : ""), "aria-hidden": "true" }, el("span", {}));
      bar.firstChild.style.width = Math.min(100, u * 100).toFixed(1) + "%";
      return el("tr", {},
        el("td", {}, customerLink(a.customer_id)),
        el("td", {}, bar, pct(a.utilization)),
        el("td", { class: "num" }, money(a.exposure, a.currency)),
        el("td", { class: "num" }, money(a.limit_effective, a.currency)),
        el("td", { class: "num" }, String(a.held_orders)));
    }));
  }

  // ---- customer ------------------------------------------------------------------------------

  function facts(target, pairs) {
    $(target).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "–" : String(v))]));
  }

  async function loadCustomer(id) {
    let c, h;
    try {
      [c, h] = await Promise.all([
        api("/v1/customers/" + encodeURIComponent(id)),
        api("/v1/customers/" + encodeURIComponent(id) + "/history"),
      ]);
    } catch (e) {
      if (e.status !== 401) status("Cannot load customer " + id + ": " + e.message, "bad");
      return;
    }
    const cur = c.currency;
    $("customer-title").textContent = "Customer " + c.customer_id + (c.group_id ? " · group " + c.group_id : "");
    facts("c-position", [
      ["Exposure", money(c.exposure.total, cur)],
      ["· open orders", money(c.exposure.open_orders, cur)],
      ["· receivables", money(c.exposure.receivables, cur)],
      ["· unapplied credit", money(c.exposure.unapplied_credit, cur)],
      ["Effective limit", money(c.limit_effective, cur)],
      ["Available", money(c.available, cur)],
      ["Utilization", pct(c.utilization)],
      ["Held orders", c.held_orders.length],
      ["As of", when(c.as_of)],
    ]);
    const p = c.profile || {};
    facts("c-profile", [
      ["Grade", c.grade], ["Status", c.status + (c.manual_block ? " (blocked by " + c.manual_block.actor + ")" : "")],
      ["Credit limit", money(p.credit_limit, p.currency)],
      ["Temporary limit", p.temporary_limit ? money(p.temporary_limit.amount, p.currency) + " until " + when(p.temporary_limit.expires_at) : null],
      ["Terms", p.payment_terms_days === undefined ? null : p.payment_terms_days + " days"],
      ["Max order", money(p.max_order_amount, p.currency)],
      ["Review date", p.review_date],
    ]);
    const aging = Object.entries(c.aging).sort(([a], [b]) => (a === "current" ? -1 : b === "current" ? 1 : parseInt(a, 10) - parseInt(b, 10)));
    facts("c-aging", aging.map(([k, v]) => [k === "current" ? "Not yet due" : k + " days", money(v, cur)]));
    $("c-orders").replaceChildren(...c.orders.map((o) => el("tr", {},
      el("td", {}, o.order_id), el("td", {}, el("span", { class: "st " + o.state }, o.state)),
      el("td", { class: "num" }, money(o.amount, o.currency)), el("td", { class: "num" }, o.open_remaining))));
    $("c-recv").replaceChildren(...c.receivables.map((r) => el("tr", {},
      el("td", {}, r.shipment_id), el("td", {}, when(r.due_at).slice(0, 10)),
      el("td", { class: "num" }, money(r.open, cur)), el("td", { class: "num" }, r.days_overdue))));
    $("c-recent").replaceChildren(...h.items.slice().reverse().map(eventItem));
    chart(h.utilization);
  }

  function chart(points) {
    const box = $("c-chart");
    if (points.length < 2) {
      box.replaceChildren(el("p", { class: "empty" }, "Not enough history yet: the chart fills as this customer's position changes."));
      return;
    }
    const W = 640, H = 180, L = 40, B = 20;
    const t0 = Date.parse(points[0].at), t1 = Date.parse(points[points.length - 1].at) || t0 + 1;
    const ys = points.map((p) => Number(p.utilization));
    const top = Math.max(1.1, ...ys);
    const x = (t) => L + ((Date.parse(t) - t0) / Math.max(1, t1 - t0)) * (W - L - 8);
    const y = (u) => 6 + (1 - u / top) * (H - B - 6);
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    const last = points[points.length - 1];
    svg.setAttribute("aria-label", `Utilization of ${customer} over ${points.length} changes, from ${pct(points[0].utilization)} to ${pct(last.utilization)}`);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text) e.textContent = text;
      svg.append(e);
    };
    add("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B });
    add("line", { class: "axis", x1: L, y1: 0, x2: L, y2: H - B });
    add("line", { class: "limit", x1: L, y1: y(1), x2: W, y2: y(1) });
    add("text", { x: 2, y: y(1) + 4 }, "100%");
    add("text", { x: 2, y: H - B }, "0%");
    add("text", { x: L, y: H - 4 }, when(points[0].at).slice(0, 10));
    add("text", { x: W - 70, y: H - 4 }, when(last.at).slice(0, 10));
    add("polyline", { class: "line", points: points.map((p) => `${x(p.at).toFixed(1)},${y(Number(p.utilization)).toFixed(1)}`).join(" ") });
    box.replaceChildren(svg);
  }

  // ---- live feed -----------------------------------------------------------------------------

  function eventItem(item) {
    const r = item.record;
    if (item.kind === "decision") {
      return el("li", { "data-decision-id": r.decision_id, "data-order-id": r.order_id, "data-status": r.status },
        el("span", { class: "when" }, when(r.decided_at)),
        el("span", { class: "st " + r.status }, r.status), " ", r.order_id, " · ", r.customer_id, " · ", money(r.amount, r.currency),
        r.reasons.length ? el("span", { class: "detail" }, r.reasons.map((x) => x.code).join(", ")) : null,
        r.actor ? el("span", { class: "detail" }, "by " + r.actor + (r.note ? ": " + r.note : "")) : null);
    }
    return el("li", { "data-alert-id": r.alert_id },
      el("span", { class: "when" }, when(r.at)),
      el("span", { class: "st " + r.severity }, r.severity), " ", r.kind, " · ", r.customer_id || r.group_id || "");
  }

  function onItem(item) {
    const list = $("feed");
    list.prepend(eventItem(item));
    while (list.children.length > FEED_MAX) list.lastChild.remove();
    const r = item.record;
    if (item.kind === "decision" && sent.has(r.order_id) && (r.status === "released" || r.status === "rejected")) {
      sent.delete(r.order_id);
      status("The engine " + r.status + " " + r.order_id + (r.actor ? " (by " + r.actor + ")" : "") + ".", "ok");
    }
    if (item.kind === "decision" && r.status !== "approved" && view === "holds") later("holds", 300, loadHolds);
    if (view === "customer" && customer && r.customer_id === customer) later("customer", 500, () => loadCustomer(customer));
  }

  async function loadFeed() {
    try {
      const page = await api("/v1/feed?limit=50");
      $("feed").replaceChildren(...page.items.slice().reverse().map(eventItem));
    } catch (e) {
      if (e.status !== 401) status("Cannot load the feed: " + e.message, "bad");
    }
    stream(0);
  }

  // Server-sent events read with fetch, so the token travels in a header, not the URL.
  async function stream(attempt) {
    if (!token) return;
    const controller = new AbortController();
    streamAbort = controller;
    const state = $("feed-state");
    try {
      const r = await fetch("/v1/feed/stream", { headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" }, signal: controller.signal });
      if (!r.ok) throw new Error("HTTP " + r.status);
      state.textContent = "live";
      state.className = "pill live";
      attempt = 0;
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (event === "decision" || event === "alert") onItem({ kind: event, record: JSON.parse(data) });
          if (event === "lagged") loadFeed();
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    if (streamAbort !== controller || !token) return;
    state.textContent = "reconnecting";
    state.className = "pill";
    setTimeout(() => stream(attempt + 1), Math.min(30000, 1000 * 2 ** attempt));
  }

  // ---- wiring --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    const select = $("f-reason");
    for (const code of REASONS) select.append(el("option", { value: code }, code));
    $("sign-in-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("token").value.trim());
    });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("hold-filter").addEventListener("submit", (e) => { e.preventDefault(); loadHolds(); });
    $("hold-filter").addEventListener("reset", () => setTimeout(loadHolds, 0));
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
    if (token) signIn(token);
    else $("token").focus();
  });
})();
