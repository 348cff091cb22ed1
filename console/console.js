// credit-sentinel console: the hold queues (orders and deliveries), customer positions, top
// accounts and a live feed of committed decisions and alerts, over the engine's own /v1 API.
// No framework, no build step.
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
  // Orders this tab sent a release or rejection for one by one, until the engine's decision
  // arrives (each decision is announced in the status line).
  const sent = new Set();
  // The last bulk action: its summary stays in the status line and counts the engine's
  // decisions as they arrive (one announcement per order would hide the summary).
  let bulkSent = null;

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
    $("deliveries-body").replaceChildren();
    status(message || "", message ? "bad" : "");
    $("token").focus();
  }

  // ---- views ---------------------------------------------------------------------------------

  function show(name) {
    view = name;
    for (const v of ["holds", "deliveries", "top", "audit", "customer"]) $("view-" + v).hidden = v !== name;
    for (const b of document.querySelectorAll(".tab")) {
      if (b.dataset.view === name) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }
    clearInterval(topTimer);
    focused = null;
    if (name === "holds" || name === "deliveries") loadQueue(name);
    if (name === "top") { loadTop(); topTimer = setInterval(loadTop, 5000); }
    if (name === "audit") loadAudit();
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

  // ---- money and amounts ---------------------------------------------------------------------

  const LOCALE = navigator.language || "en";
  const SEPARATORS = (() => {
    const parts = new Intl.NumberFormat(LOCALE).formatToParts(11111.5);
    return {
      group: (parts.find((p) => p.type === "group") || { value: "," }).value,
      decimal: (parts.find((p) => p.type === "decimal") || { value: "." }).value,
    };
  })();

  // An exact decimal string ("12345.6700") in the reader's locale ("12,345.67", "12.345,67"),
  // digit by digit: never through a float.
  function formatAmount(text) {
    const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text));
    if (!m) return String(text);
    const [, sign, int, frac = ""] = m;
    const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, SEPARATORS.group);
    const cents = (frac.replace(/0+$/, "") + "00").slice(0, Math.max(2, frac.replace(/0+$/, "").length));
    return sign + grouped + SEPARATORS.decimal + cents;
  }

  // What a person types ("10.000,00", "10,000.00", "10 000", "1'000.5") as the API's decimal
  // ("10000.00"), or an Error saying what is accepted.
  function parseAmountInput(raw) {
    const text = raw.trim().replace(/[\s\u00a0\u202f']/g, "");
    const bad = new Error(`"${raw.trim()}" is not an amount: write it as 10000.00, 10,000.00 or 10.000,00`);
    if (!/^\d[\d.,]*$/.test(text)) throw bad;
    const lastDot = text.lastIndexOf("."), lastComma = text.lastIndexOf(",");
    let decimal = null;
    if (lastDot >= 0 && lastComma >= 0) decimal = lastDot > lastComma ? "." : ",";
    else if (lastDot >= 0 || lastComma >= 0) {
      const sep = lastDot >= 0 ? "." : ",";
      const groups = text.split(sep);
      // "1.000.000" or "10,000": grouping; one separator with other than three digits after it:
      // the decimal point; "1,000" alone: the reader's locale decides.
      if (groups.length > 2) decimal = null;
      else if (groups[1].length !== 3) decimal = sep;
      else decimal = sep === SEPARATORS.decimal ? sep : null;
      if (groups.length > 2 && groups.slice(1).some((g) => g.length !== 3)) throw bad;
    }
    const [int, frac = ""] = decimal ? text.split(decimal) : [text];
    const group = decimal === "." ? "," : decimal === "," ? "." : /[.,]/;
    const parts = int.split(group);
    if (parts.length > 1 && (parts[0].length > 3 || parts.slice(1).some((g) => g.length !== 3))) throw bad;
    const digits = parts.join("");
    if (!/^\d+$/.test(digits) || /[.,]/.test(frac) || frac.length > 4) throw bad;
    return digits + (frac ? "." + frac : "");
  }

  const money = (amount, currency) => amount === null || amount === undefined ? "–" : formatAmount(amount) + (currency ? " " + currency : "");

  // Plain-language labels beside the contract's reason codes.
  const REASON_LABELS = {
    CUSTOMER_UNKNOWN: "No credit profile for this customer",
    ACCOUNT_BLOCKED: "Account blocked",
    PREPAYMENT_REQUIRED: "Prepayment required (grade D)",
    ORDER_LIMIT_EXCEEDED: "Order above the single-order maximum",
    LIMIT_EXPIRED: "Credit limit expired",
    OVERDUE_DAYS: "Invoices overdue too long",
    OVERDUE_AMOUNT: "Too much overdue",
    CREDIT_LIMIT_EXCEEDED: "Over the credit limit",
    GROUP_LIMIT_EXCEEDED: "Over the group's credit limit",
    AMOUNT_ANOMALY: "Unusually large order for this customer",
    CURRENCY_MISMATCH: "Currency without an exchange rate",
    HOLD_EXPIRED: "Held too long: expired",
    MANUAL: "Held by a credit manager",
    ORDER_NOT_APPROVED: "Its order is not approved",
  };

  // ---- hold queues (orders and deliveries) ---------------------------------------------------

  // The queue never redraws itself while orders flow: decisions from the live feed update the
  // rows they name in place (a row whose note is being written keeps it), and new holds are
  // counted in a banner the reader opens when ready. Only the reader's own actions (filter,
  // sort, page, "show") reload the page.
  const QUEUES = {
    holds: { path: "/v1/holds", id: "order_id", noun: "order", feed: "decision", prefix: "h" },
    deliveries: { path: "/v1/deliveries", id: "delivery_id", noun: "delivery", feed: "delivery_decision", prefix: "d" },
  };
  const PAGE = 50;
  const queueState = {
    holds: { offset: 0, sort: "held_at", order: "asc", total: 0, fresh: 0, selected: new Set(), asked: 0 },
    deliveries: { offset: 0, sort: "held_at", order: "asc", total: 0, fresh: 0, selected: new Set(), asked: 0 },
  };

  function queueQuery(kind, extra) {
    const st = queueState[kind];
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(st.offset), sort: st.sort, order: st.order });
    for (const [k, v] of new FormData($(kind === "holds" ? "hold-filter" : "delivery-filter"))) {
      const t = String(v).trim();
      if (!t) continue;
      if (k === "min_amount" || k === "max_amount") q.set(k, parseAmountInput(t));
      else q.set(k, t);
    }
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q;
  }

  // The query, or null after telling the reader what in the filters is not understood.
  function queryOrSay(kind) {
    try {
      return queueQuery(kind);
    } catch (e) {
      status(e.message, "bad");
      return null;
    }
  }

  async function loadQueue(kind) {
    let page;
    const q = queryOrSay(kind);
    if (!q) return;
    // Only the latest request draws: a slow answer to an earlier one (a click on Next while
    // the list was loading) is dropped.
    const st = queueState[kind];
    const ticket = ++st.asked;
    // aria-busy while a reload is on its way (screen readers wait; so do the browser tests).
    const table = $(kind + "-body").closest("table");
    table.setAttribute("aria-busy", "true");
    try {
      page = await api(QUEUES[kind].path + "?" + q);
    } catch (e) {
      if (ticket === st.asked) table.setAttribute("aria-busy", "false");
      if (e.status !== 401) status("Cannot load the queue: " + e.message, "bad");
      return;
    }
    if (ticket !== st.asked) return;
    if (page.items.length === 0 && st.offset > 0 && page.total > 0) {
      st.offset = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
      return loadQueue(kind);
    }
    st.total = page.total;
    st.fresh = 0;
    st.selected.clear();
    $(kind + "-count").textContent = page.total.toLocaleString(LOCALE);
    $(kind + "-empty").hidden = page.items.length > 0;
    $(kind + "-body").replaceChildren(...page.items.map((h) => queueRow(kind, h)));
    const first = page.total === 0 ? 0 : st.offset + 1;
    const last = st.offset + page.items.length;
    $(kind + "-page").textContent = `${first.toLocaleString(LOCALE)}–${last.toLocaleString(LOCALE)} of ${page.total.toLocaleString(LOCALE)}`;
    $(kind + "-prev").disabled = st.offset === 0;
    $(kind + "-next").disabled = last >= page.total;
    $(kind + "-fresh").hidden = true;
    table.setAttribute("aria-busy", "false");
    for (const th of document.querySelectorAll(`#view-${kind} th[data-sort]`)) {
      th.setAttribute("aria-sort", th.dataset.sort === st.sort ? (st.order === "asc" ? "ascending" : "descending") : "none");
    }
    bulkState(kind);
  }

  // A row is busy while its note holds text, it has focus inside, or it is selected: the live
  // feed then changes only its status line, never the row.
  function busy(row) {
    const note = row.querySelector("input[name=note]");
    return (note && note.value.trim() !== "") || row.contains(document.activeElement) || row.querySelector("input[type=checkbox]:checked");
  }

  function reasonList(reasons) {
    return el("ul", { class: "reasons" }, ...reasons.map((r) =>
      el("li", {}, el("span", { class: "code" }, r.code), " ", el("span", { class: "label" }, REASON_LABELS[r.code] || ""),
        el("span", { class: "detail" }, r.detail))));
  }

  function queueRow(kind, h) {
    const cfg = QUEUES[kind];
    const id = h[cfg.id];
    const canAct = me && (me.role === "approver" || me.role === "admin");
    const noteId = `note-${cfg.prefix}-${id}`;
    const note = el("input", { id: noteId, name: "note", placeholder: "Note (required)", disabled: !canAct, maxlength: "500" });
    const mine = h.first_approver && me && h.first_approver === me.name;
    const release = el("button", {
      type: "button", disabled: !canAct || mine, "aria-label": "Release " + id,
      title: mine ? "You asked first: a second approver must confirm" : null,
      onclick: () => act(kind, h, "release", note),
    }, "Release");
    const reject = el("button", {
      type: "button", class: "danger", disabled: !canAct, "aria-label": "Reject " + id,
      onclick: () => act(kind, h, "reject", note),
    }, "Reject");
    const asked = el("span", { class: "asked", "data-role": "asked" },
      h.first_approver ? "Release asked by " + h.first_approver + "; a second approver must confirm." : "");
    const box = el("input", { type: "checkbox", id: `pick-${cfg.prefix}-${id}`, disabled: !canAct, onchange: (e) => {
      if (e.target.checked) queueState[kind].selected.add(id); else queueState[kind].selected.delete(id);
      bulkState(kind);
    } });
    const pick = el("label", { class: "pick" }, box, el("span", { class: "sr" }, "Select " + id));
    const who = el("td", {}, customerLink(h.customer_id), h.customer_name ? el("span", { class: "detail" }, h.customer_name) : null);
    const days = h.days_on_hold === undefined ? "–" : String(h.days_on_hold);
    const cells = kind === "holds"
      ? [el("td", {}, when(h.held_at)), el("td", { class: "num" }, days), el("td", {}, id)]
      : [el("td", {}, when(h.held_at)), el("td", { class: "num" }, days), el("td", {}, id, el("span", { class: "detail" }, "order " + h.order_id + " · " + (h.order_status || "")))];
    const row = el("tr", { [`data-${cfg.noun === "order" ? "order" : "delivery"}-id`]: id, tabindex: "-1" },
      el("td", {}, pick),
      ...cells,
      who,
      el("td", { class: "num" }, money(h.amount, h.currency)),
      el("td", {}, reasonList(h.reasons)),
      el("td", {}, el("div", { class: "act" },
        el("label", { for: noteId, class: "detail" }, "Note for " + id),
        note, el("div", { class: "buttons" }, release, reject), asked)));
    row.hold = h;
    row.addEventListener("focusin", () => { focused = row; });
    return row;
  }

  function rowOf(kind, id) {
    const attr = kind === "holds" ? "data-order-id" : "data-delivery-id";
    return document.querySelector(`#${kind}-body tr[${attr}="${CSS.escape(id)}"]`);
  }

  // A decided row stays where it is (the reader may be looking at it), says what happened and
  // can no longer be acted on; it leaves the list on the next reload.
  function markDecided(kind, id, text, cls) {
    const row = rowOf(kind, id);
    if (!row) return false;
    row.classList.add("decided", cls);
    for (const b of row.querySelectorAll("button, input[type=checkbox]")) b.disabled = true;
    const box = row.querySelector("input[type=checkbox]");
    if (box) { box.checked = false; queueState[kind].selected.delete(id); }
    row.querySelector("[data-role=asked]").textContent = text;
    bulkState(kind);
    return true;
  }

  // After this tab's first approval of a four-eyes release: that one row learns it, in place.
  async function refreshRow(kind, id) {
    let page;
    try {
      page = await api(QUEUES[kind].path + "?" + new URLSearchParams({ q: id, limit: "20" }));
    } catch (_) { return; }
    const h = page.items.find((x) => x[QUEUES[kind].id] === id);
    const row = rowOf(kind, id);
    if (!h || !row || row.classList.contains("decided")) return;
    row.hold = h;
    if (h.first_approver) {
      row.querySelector("[data-role=asked]").textContent = "Release asked by " + h.first_approver + "; a second approver must confirm.";
      if (me && h.first_approver === me.name) row.querySelector(`button[aria-label="Release ${CSS.escape(id)}"]`)?.setAttribute("disabled", "");
    }
  }

  async function send(kind, h, what, note, announce = true) {
    const cfg = QUEUES[kind];
    const id = h[cfg.id];
    const path = cfg.path + "/" + encodeURIComponent(id) + "/" + what;
    const r = await api(path, { method: "POST", body: { note } });
    if (announce) sent.add(id);
    const firstOfTwo = r.four_eyes && r.four_eyes.first_approver === null;
    if (firstOfTwo) setTimeout(() => refreshRow(kind, id), 1500);
    return { id, command: r.command_id, firstOfTwo };
  }

  async function act(kind, h, what, noteInput) {
    const id = h[QUEUES[kind].id];
    const note = noteInput.value.trim();
    if (!note) {
      status("Write a note first: every release and rejection is explained.", "bad");
      noteInput.focus();
      return;
    }
    const row = rowOf(kind, id);
    try {
      const r = await send(kind, h, what, note);
      status((what === "release" ? "Release" : "Rejection") + " of " + id + " sent (" + r.command + ")" +
        (r.firstOfTwo ? "; it waits for a second approver." : "; waiting for the engine's decision."), "ok");
      if (row) for (const b of row.querySelectorAll("button")) b.disabled = true;
    } catch (e) {
      if (e.status !== 401) status("Not sent: " + e.message, "bad");
    }
  }

  function bulkState(kind) {
    const n = queueState[kind].selected.size;
    const bar = $(kind + "-bulk");
    if (!bar) return;
    $(kind + "-selected").textContent = n === 0 ? "Select holds to release or reject them together." : `${n} selected`;
    for (const b of bar.querySelectorAll("button")) b.disabled = n === 0;
  }

  // One note for every selected hold; four-eyes is kept per hold (the page says which wait for
  // a second approver and which were refused, with the engine's reason).
  async function bulk(kind, what) {
    const note = $(kind + "-bulk-note").value.trim();
    if (!note) {
      status("Write a note first: every release and rejection is explained.", "bad");
      $(kind + "-bulk-note").focus();
      return;
    }
    const ids = [...queueState[kind].selected];
    const sentIds = [], waiting = [], refused = [];
    const mine = { ids: new Set(ids), decided: new Set(), total: 0, summary: null, tone: "ok" };
    bulkSent = mine;
    for (const id of ids) {
      const row = rowOf(kind, id);
      if (!row) continue;
      try {
        const r = await send(kind, row.hold, what, note, false);
        (r.firstOfTwo ? waiting : sentIds).push(id);
        for (const b of row.querySelectorAll("button")) b.disabled = true;
        row.querySelector("[data-role=asked]").textContent = r.firstOfTwo
          ? "Release asked by you; a second approver must confirm." : (what === "release" ? "Release" : "Rejection") + " sent.";
      } catch (e) {
        if (e.status === 401) return;
        refused.push(id + " (" + e.message + ")");
      }
      const box = row.querySelector("input[type=checkbox]");
      if (box) box.checked = false;
      queueState[kind].selected.delete(id);
    }
    bulkState(kind);
    const verb = what === "release" ? "released" : "rejected";
    const parts = sentIds.length || (!waiting.length && !refused.length) ? [`${sentIds.length} to be ${verb}`] : [];
    if (waiting.length) parts.push(`${waiting.length} wait for a second approver: ${waiting.join(", ")}`);
    if (refused.length) parts.push(`${refused.length} refused: ${refused.join("; ")}`);
    mine.ids = new Set(sentIds);
    for (const id of mine.decided) if (!mine.ids.has(id)) mine.decided.delete(id);
    mine.total = sentIds.length;
    mine.summary = parts.join(". ") + ".";
    mine.tone = refused.length ? "bad" : "ok";
    showBulk(mine);
    $(kind + "-bulk-note").value = "";
  }

  function showBulk(b) {
    const done = b.decided.size;
    status(b.summary + (done ? ` The engine has decided ${done} of ${b.total}.` : ""), b.tone);
  }

  // Counts an engine decision on an order or delivery of the last bulk action (one that may
  // arrive while the action is still sending).
  function bulkDecided(id) {
    const b = bulkSent;
    if (!b || !b.ids.has(id) || b.decided.has(id)) return;
    b.decided.add(id);
    if (b.summary) showBulk(b);
  }

  // The filtered queue as CSV (all pages), fetched with the token and saved as a file.
  async function exportQueue(kind) {
    const q = queryOrSay(kind);
    if (!q) return;
    q.delete("limit");
    q.delete("offset");
    const r = await fetch(QUEUES[kind].path + "/export?" + q, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (!r.ok) {
      status("Cannot export: HTTP " + r.status, "bad");
      return;
    }
    const blob = await r.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: kind === "holds" ? "held-orders.csv" : "held-deliveries.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  // A decision from the live feed, applied to the queue it concerns without moving the list.
  function queueSees(kind, r) {
    const id = kind === "holds" ? r.order_id : r.delivery_id;
    if (r.status === "held") {
      if (rowOf(kind, id)) return;
      const st = queueState[kind];
      st.fresh += 1;
      const b = $(kind + "-fresh");
      b.hidden = false;
      b.textContent = `${st.fresh.toLocaleString(LOCALE)} new ${st.fresh === 1 ? "hold" : "holds"}: show`;
      return;
    }
    const by = r.actor ? " by " + r.actor + (r.note ? ": " + r.note : "") : " by the engine's re-check";
    markDecided(kind, id, (r.status === "rejected" ? "Rejected" : r.status === "approved" ? "Approved" : "Released") + by + ".", r.status);
  }

  // ---- keyboard ------------------------------------------------------------------------------

  let focused = null;

  function moveFocus(step) {
    const body = $(view + "-body");
    if (!body) return;
    const rows = [...body.querySelectorAll("tr")];
    if (rows.length === 0) return;
    let i = rows.indexOf(focused);
    i = i < 0 ? 0 : Math.max(0, Math.min(rows.length - 1, i + step));
    focused = rows[i];
    focused.focus();
  }

  function onKey(e) {
    if (!me || e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.target instanceof HTMLTextAreaElement;
    if (e.key === "Escape" && typing) {
      e.target.blur();
      if (focused && focused.contains(e.target)) focused.focus();
      return;
    }
    if (typing) return;
    if (e.key === "/") {
      const search = $(view === "deliveries" ? "fd-q" : "f-q");
      if (search) { e.preventDefault(); search.focus(); }
      return;
    }
    if (view !== "holds" && view !== "deliveries") return;
    if (e.key === "j") { e.preventDefault(); moveFocus(1); }
    if (e.key === "k") { e.preventDefault(); moveFocus(-1); }
    if ((e.key === "r" || e.key === "x") && focused && focused.hold) {
      e.preventDefault();
      const note = focused.querySelector("input[name=note]");
      if (!note.value.trim()) {
        status("Write a note first: every release and rejection is explained (then Escape, and r or x).", "bad");
        note.focus();
        return;
      }
      act(view, focused.hold, e.key === "r" ? "release" : "reject", note);
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
        el("td", {}, customerLink(a.customer_id), a.customer_name ? el("span", { class: "detail" }, a.customer_name) : null),
        el("td", {}, bar, pct(a.utilization)),
        el("td", { class: "num" }, money(a.exposure, a.currency)),
        el("td", { class: "num" }, money(a.limit_effective, a.currency)),
        el("td", { class: "num" }, String(a.held_orders)));
    }));
  }

  // ---- audit ---------------------------------------------------------------------------------

  const COMMAND_LABELS = {
    "command.release_hold": "Release order", "command.reject_hold": "Reject order",
    "command.release_delivery": "Release delivery", "command.reject_delivery": "Reject delivery",
    "command.block": "Block customer", "command.unblock": "Unblock customer",
  };

  let auditAsked = 0;

  async function loadAudit() {
    const q = new URLSearchParams({ limit: "200" });
    for (const [k, v] of new FormData($("audit-filter"))) if (String(v).trim()) q.set(k, String(v).trim());
    let page;
    const table = $("audit-body").closest("table");
    const ticket = ++auditAsked;
    table.setAttribute("aria-busy", "true");
    try {
      page = await api("/v1/audit?" + q);
    } catch (e) {
      if (ticket === auditAsked) table.setAttribute("aria-busy", "false");
      if (e.status !== 401) status("Cannot load the audit: " + e.message, "bad");
      return;
    }
    if (ticket !== auditAsked) return;
    table.setAttribute("aria-busy", "false");
    $("audit-empty").hidden = page.items.length > 0;
    $("audit-body").replaceChildren(...page.items.map((c) => {
      const outcome = c.status === "awaiting_second_approver" ? "First approval: waits for a second approver"
        : c.status === "refused" ? "Refused: " + (c.detail || c.error || "")
        : c.status === "applied" && c.first_approver ? "Applied: second approval (first by " + c.first_approver + ")"
        : c.status === "applied" ? "Applied" : c.status;
      return el("tr", { "data-command-id": c.command_id },
        el("td", {}, when(c.at)),
        el("td", {}, c.actor || "–"),
        el("td", {}, COMMAND_LABELS[c.type] || c.type),
        el("td", {}, c.delivery_id || c.order_id || "", c.customer_id ? el("span", { class: "detail" }, c.customer_id) : null),
        el("td", {}, c.note || ""),
        el("td", {}, outcome));
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
    $("customer-title").textContent = "Customer " + c.customer_id + (c.name ? " · " + c.name : "") + (c.group_id ? " · group " + c.group_id : "");
    const admin = me && me.role === "admin";
    $("c-block").hidden = !admin;
    if (admin) {
      $("c-block-state").textContent = c.manual_block ? "Blocked by " + c.manual_block.actor + ": every new order is held." : "Not blocked.";
      $("c-block-on").disabled = !!c.manual_block;
      $("c-block-off").disabled = !c.manual_block;
    }
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
    if (item.kind === "delivery_decision") {
      return el("li", { "data-delivery-decision-id": r.delivery_decision_id, "data-delivery-id": r.delivery_id, "data-status": r.status },
        el("span", { class: "when" }, when(r.decided_at)),
        el("span", { class: "st " + r.status }, r.status), " delivery ", r.delivery_id, " · ", r.customer_id, " · ", money(r.amount, r.currency),
        r.reasons.length ? el("span", { class: "detail" }, r.reasons.map((x) => x.code).join(", ")) : null,
        r.actor ? el("span", { class: "detail" }, "by " + r.actor + (r.note ? ": " + r.note : "")) : null);
    }
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

  // The feed in time order (newest first) by when each was decided, whatever order batches
  // committed them in.
  const itemTime = (item) => item.record.decided_at || item.record.at || "";

  function onItem(item) {
    const list = $("feed");
    const li = eventItem(item);
    li.dataset.at = itemTime(item);
    let before = list.firstElementChild;
    while (before && (before.dataset.at || "") > li.dataset.at) before = before.nextElementSibling;
    list.insertBefore(li, before);
    while (list.children.length > FEED_MAX) list.lastChild.remove();
    const r = item.record;
    if (item.kind === "decision" && sent.has(r.order_id) && (r.status === "released" || r.status === "rejected")) {
      sent.delete(r.order_id);
      status("The engine " + r.status + " " + r.order_id + (r.actor ? " (by " + r.actor + ")" : "") + ".", "ok");
    }
    if (r.status === "released" || r.status === "rejected") bulkDecided(item.kind === "decision" ? r.order_id : r.delivery_id);
    if (item.kind === "decision") queueSees("holds", r);
    if (item.kind === "delivery_decision") queueSees("deliveries", r);
    if (view === "customer" && customer && r.customer_id === customer) later("customer", 500, () => loadCustomer(customer));
  }

  async function loadFeed() {
    try {
      const page = await api("/v1/feed?limit=50");
      const items = page.items.slice().sort((a, b) => (itemTime(b) > itemTime(a) ? 1 : itemTime(b) < itemTime(a) ? -1 : 0));
      $("feed").replaceChildren(...items.map((it) => { const li = eventItem(it); li.dataset.at = itemTime(it); return li; }));
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
          if (event === "decision" || event === "alert" || event === "delivery_decision") onItem({ kind: event, record: JSON.parse(data) });
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
    for (const code of REASONS) $("f-reason").append(el("option", { value: code }, code + " · " + REASON_LABELS[code]));
    for (const code of [...REASONS, "ORDER_NOT_APPROVED"]) $("fd-reason").append(el("option", { value: code }, code + " · " + REASON_LABELS[code]));
    $("sign-in-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("token").value.trim());
    });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    for (const [kind, form] of [["holds", "hold-filter"], ["deliveries", "delivery-filter"]]) {
      const reload = () => { queueState[kind].offset = 0; loadQueue(kind); };
      $(form).addEventListener("submit", (e) => { e.preventDefault(); reload(); });
      $(form).addEventListener("reset", () => setTimeout(reload, 0));
      $(kind + "-prev").addEventListener("click", () => { queueState[kind].offset = Math.max(0, queueState[kind].offset - PAGE); loadQueue(kind); });
      $(kind + "-next").addEventListener("click", () => { queueState[kind].offset += PAGE; loadQueue(kind); });
      $(kind + "-fresh").addEventListener("click", () => loadQueue(kind));
      $(kind + "-bulk-release").addEventListener("click", () => bulk(kind, "release"));
      $(kind + "-bulk-reject").addEventListener("click", () => bulk(kind, "reject"));
      for (const th of document.querySelectorAll(`#view-${kind} th[data-sort]`)) {
        th.querySelector("button").addEventListener("click", () => {
          const st = queueState[kind];
          st.order = st.sort === th.dataset.sort && st.order === "asc" ? "desc" : "asc";
          st.sort = th.dataset.sort;
          st.offset = 0;
          loadQueue(kind);
        });
      }
    }
    $("holds-export").addEventListener("click", () => exportQueue("holds"));
    $("deliveries-export").addEventListener("click", () => exportQueue("deliveries"));
    $("audit-filter").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(); });
    $("audit-filter").addEventListener("reset", () => setTimeout(loadAudit, 0));
    for (const [id, what] of [["c-block-on", "block"], ["c-block-off", "unblock"]]) {
      $(id).addEventListener("click", async () => {
        const note = $("c-block-note").value.trim();
        if (!note) {
          status("Write a note first: every block and unblock is explained.", "bad");
          $("c-block-note").focus();
          return;
        }
        try {
          const r = await api("/v1/customers/" + encodeURIComponent(customer) + "/" + what, { method: "POST", body: { note } });
          status((what === "block" ? "Block" : "Unblock") + " of " + customer + " sent (" + r.command_id + ").", "ok");
          $("c-block-note").value = "";
          later("customer", 1500, () => loadCustomer(customer));
        } catch (e) {
          if (e.status !== 401) status("Not sent: " + e.message, "bad");
        }
      });
    }
    document.addEventListener("keydown", onKey);
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
    if (token) signIn(token);
    else $("token").focus();
  });
})();
