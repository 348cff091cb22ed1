// The credit desk at work while orders flow (issue 24), in headless Chromium driven by
// Playwright: a note typed into a row survives five seconds of new holds arriving (announced,
// not inserted) and Release then works; paging through the whole queue (over 1,000 holds)
// without a row seen twice; sorting, search, amounts in the reader's formats; bulk release
// with four-eyes kept per order across two approvers; the filtered queue exported as CSV; the
// keyboard. Run by tests/http.rs against an engine it started and keeps feeding; exits
// non-zero on any failure. Screenshots go to $SHOTS. Then held deliveries, the audit of
// manual decisions by person and day, and an admin's block from the customer view.
import { env, check, passed, launch } from "./common.mjs";
import { readFile } from "node:fs/promises";

const BASE = env("BASE_URL");
const ALICE = env("APPROVER_TOKEN");
const BOB = env("APPROVER2_TOKEN");
const ROOT = env("ADMIN_TOKEN");
const SHOTS = env("SHOTS");
const MIN_HOLDS = Number(env("MIN_HOLDS"));
const BIG = env("BIG_ORDERS").split(",");
const TIMEOUT = 30000;

const count = (text) => Number(text.replace(/[^\d]/g, ""));

const browser = await launch();
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, locale: "en-US", acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  const holdRequests = [];
  page.on("request", (r) => { if (r.url().includes("/v1/holds")) holdRequests.push(Date.now()); });

  const signIn = async (token) => {
    await page.goto(BASE + "/");
    await page.getByLabel("API token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#holds-body tr").first().waitFor();
  };
  await signIn(ALICE);

  // The page and the total, with thousands separators.
  const info = await page.locator("#holds-page").innerText();
  check(/^1–50 of \d{1,3}(,\d{3})+$/.test(info), `page and total shown (${info})`);
  check(count(info.split(" of ")[1]) >= MIN_HOLDS, `over ${MIN_HOLDS} holds in the queue`);
  const amount = await page.locator("#holds-body tr").first().locator("td.num").nth(1).innerText();
  check(/^\d{1,3}(,\d{3})*\.\d{2} EUR$/.test(amount), `amounts formatted for the reader (${amount})`);

  // A note typed into a row survives new holds arriving; they are announced, not inserted.
  const first = page.locator("#holds-body tr").first();
  const firstId = await first.getAttribute("data-order-id");
  const note = first.getByLabel(`Note for ${firstId}`);
  await note.click();
  await note.pressSequentially("customer paid by wire this morning", { delay: 20 });
  const before = holdRequests.length;
  await page.waitForTimeout(5000);
  check(await note.inputValue() === "customer paid by wire this morning", "the note is still there after 5 s of traffic");
  check(await note.evaluate((e) => e === document.activeElement), "the note keeps the focus");
  check(holdRequests.length === before, "the queue is not polled or redrawn meanwhile");
  const fresh = page.locator("#holds-fresh");
  await fresh.waitFor();
  check(/^\d+ new holds?: show$/.test(await fresh.innerText()), `new holds are announced (${await fresh.innerText()})`);
  check(await page.locator("#holds-body tr").first().getAttribute("data-order-id") === firstId, "the list did not move");
  await page.screenshot({ path: `${SHOTS}/desk-live.png` });
  await first.getByRole("button", { name: `Release ${firstId}` }).click();
  await page.getByText(`Release of ${firstId} sent`).waitFor();
  await page.locator(`tr.decided[data-order-id="${firstId}"]`, { hasText: "Released by alice" }).waitFor();
  passed("Release works on the row whose note was typed during traffic");

  // Paging through the whole queue: every hold once.
  await fresh.click();
  await fresh.waitFor({ state: "hidden" });
  await page.locator("#holds-page", { hasText: /^1–50 of / }).waitFor();
  const seen = new Set();
  let pages = 0;
  for (;;) {
    const ids = await page.locator("#holds-body tr").evaluateAll((rows) => rows.map((r) => r.dataset.orderId));
    for (const id of ids) {
      if (seen.has(id)) throw new Error("check failed: " + id + " seen on two pages");
      seen.add(id);
    }
    pages += 1;
    const next = page.getByRole("button", { name: "Next" }).first();
    if (await next.isDisabled()) break;
    const label = await page.locator("#holds-page").innerText();
    await next.click();
    await page.waitForFunction((l) => document.getElementById("holds-page").textContent !== l, label);
  }
  const last = await page.locator("#holds-page").innerText();
  check(pages >= 20 && seen.size >= MIN_HOLDS, `paged through ${pages} pages, ${seen.size} holds, none twice (${last})`);
  await page.screenshot({ path: `${SHOTS}/desk-last-page.png` });

  // Sorting by amount, largest first; search by order id; amounts in the reader's formats.
  const amountHeader = page.locator("#view-holds th[data-sort=amount] button");
  await amountHeader.click();
  await page.locator("#view-holds th[data-sort=amount][aria-sort=ascending]").waitFor();
  await amountHeader.click();
  await page.locator("#view-holds th[data-sort=amount][aria-sort=descending]").waitFor();
  const top = await page.locator("#holds-body tr").evaluateAll((rows) => rows.slice(0, 5).map((r) => r.dataset.orderId));
  check(BIG.every((b) => top.includes(b)), `largest first: the big orders lead (${top.join(", ")})`);
  const largest = await page.locator("#holds-body tr").first().locator("td.num").nth(1).innerText();
  check(/^\d{1,3},\d{3}\.\d{2} EUR$/.test(largest), `thousands separated (${largest})`);
  await page.getByLabel("Amount from", { exact: true }).fill("abc");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.getByText('"abc" is not an amount').waitFor();
  passed("an amount that is not one is refused with what is accepted");
  await page.getByLabel("Amount from", { exact: true }).fill("5.000,00");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.locator("#holds-page", { hasText: `of ${BIG.length}` }).waitFor();
  passed("5.000,00 is read as five thousand: only the big orders");
  await page.getByLabel("Amount from", { exact: true }).fill("");
  await page.getByLabel("Search", { exact: true }).fill(BIG[0]);
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.locator("#holds-page", { hasText: "1–1 of 1" }).waitFor();
  passed("search by order id");
  await page.getByLabel("Search", { exact: true }).fill("big spender");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.locator("#holds-page", { hasText: `of ${BIG.length}` }).waitFor();
  check((await page.locator("#holds-body").innerText()).includes("Big Spender Ltd"), "search by customer name, the name shown");

  // Export: the filtered queue as CSV.
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
  const csv = await readFile(await download.path(), "utf8");
  const lines = csv.split("\r\n").filter((l) => l);
  check(lines[0].startsWith("held_at,days_on_hold,order_id,customer_id,customer_name,amount"), "the export is CSV with a header");
  check(lines.length === BIG.length + 1 && BIG.every((b) => csv.includes("," + b + ",")), `the export holds the filtered rows (${lines.length - 1})`);

  // Bulk release with four-eyes: alice asks, the page says they wait; bob confirms.
  for (const id of BIG) await page.getByLabel(`Select ${id}`).check();
  check((await page.locator("#holds-selected").innerText()) === `${BIG.length} selected`, "the selection is counted");
  await page.getByLabel("Note for the selected", { exact: true }).fill("limits raised by the board");
  await page.getByRole("button", { name: "Release selected" }).first().click();
  await page.getByText(`${BIG.length} wait for a second approver`).waitFor();
  passed("bulk release by the first approver: each big order waits for a second one");
  await page.screenshot({ path: `${SHOTS}/desk-bulk.png` });
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(BOB);
  await page.getByLabel("Search", { exact: true }).fill("big spender");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.locator("#holds-page", { hasText: `of ${BIG.length}` }).waitFor();
  check((await page.locator("#holds-body").innerText()).includes("Release asked by alice"), "the second approver sees who asked");
  for (const id of BIG) await page.getByLabel(`Select ${id}`).check();
  await page.getByLabel("Note for the selected", { exact: true }).fill("confirmed with the board minutes");
  await page.getByRole("button", { name: "Release selected" }).first().click();
  await page.getByText(`${BIG.length} to be released`).waitFor();
  for (const id of BIG) await page.locator(`tr.decided[data-order-id="${id}"]`, { hasText: "Released by bob" }).waitFor();
  passed("the second approver's bulk release releases every big order");
  await page.locator("#status", { hasText: `The engine has decided ${BIG.length} of ${BIG.length}` }).waitFor();
  check((await page.locator("#status").innerText()).startsWith(`${BIG.length} to be released.`),
    "the bulk summary stays in the status line and counts the engine's decisions");

  // Keyboard: / searches, j/k move with a visible focus, r asks for a note first.
  await page.getByLabel("Search", { exact: true }).fill("");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.locator("#holds-page", { hasText: /^1–50 of / }).waitFor();
  await page.locator("body").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("/");
  check(await page.getByLabel("Search", { exact: true }).evaluate((e) => e === document.activeElement), "/ focuses the search");
  await page.keyboard.press("Escape");
  await page.keyboard.press("j");
  await page.keyboard.press("j");
  const focusedRow = await page.evaluate(() => document.activeElement.dataset.orderId);
  const second = await page.locator("#holds-body tr").nth(1).getAttribute("data-order-id");
  check(focusedRow === second, "j moves down the rows");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", "the focused row is visibly marked");
  await page.keyboard.press("r");
  await page.getByText("Write a note first").waitFor();
  passed("r without a note asks for one");
  await page.screenshot({ path: `${SHOTS}/desk-keyboard.png` });

  // Held deliveries: their own queue, the same rows.
  await page.getByRole("button", { name: /^Held deliveries/ }).click();
  const delivery = page.locator('#deliveries-body tr[data-delivery-id="DN-7"]');
  await delivery.waitFor();
  const deliveryText = await delivery.innerText();
  check(deliveryText.includes("ORDER_NOT_APPROVED") && deliveryText.includes("Its order is not approved"), "a held delivery shows its code and what it means");
  check(deliveryText.includes("O-0007") && deliveryText.includes("Customer 107 GmbH"), "with its order and customer name");
  await page.screenshot({ path: `${SHOTS}/desk-deliveries.png` });
  const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export deliveries CSV" }).click()]);
  const dcsv = (await readFile(await dl.path(), "utf8")).split("\r\n").filter((l) => l);
  check(dcsv[0].startsWith("held_at,days_on_hold,delivery_id,order_id,") && dcsv.length === 2 && dcsv[1].includes(",DN-7,O-0007,C-107,Customer 107 GmbH,507.07,EUR,ORDER_NOT_APPROVED,"), `held deliveries export as CSV (${dcsv[1]})`);

  // The audit: who released what, when, with which note; four-eyes pairs named.
  await page.getByRole("button", { name: "Audit", exact: true }).click();
  await page.locator("#audit-body tr").first().waitFor();
  await page.getByLabel("Person").fill("bob");
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator('#view-audit table[aria-busy="false"]').waitFor();
  await page.locator("#audit-body tr", { hasText: "second approval (first by alice)" }).first().waitFor();
  const bobRows = await page.locator("#audit-body tr").count();
  check(bobRows === BIG.length, `the audit lists bob's ${BIG.length} releases, each the second approval after alice`);
  await page.getByLabel("Person").fill("alice");
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator('#view-audit table[aria-busy="false"]').waitFor();
  await page.locator("#audit-body tr", { hasText: "customer paid by wire this morning" }).waitFor();
  check((await page.locator("#audit-body tr", { hasText: "First approval" }).count()) === BIG.length, "alice's release and first approvals are listed with their notes");
  // By day (of the commands' event time, as the decisions carry it).
  const day = (await page.locator("#audit-body tr td").first().innerText()).slice(0, 10);
  await page.getByLabel("Day (UTC)").fill(day);
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator('#view-audit table[aria-busy="false"]').waitFor();
  await page.waitForFunction((d) => [...document.querySelectorAll("#audit-body tr td:first-child")].every((td) => td.textContent.startsWith(d)), day);
  check((await page.locator("#audit-body tr").count()) >= 1, `filtered by day ${day}, every row of that day`);
  await page.screenshot({ path: `${SHOTS}/desk-audit.png` });
  await page.getByLabel("Day (UTC)").fill("2000-01-01");
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator('#view-audit table[aria-busy="false"]').waitFor();
  await page.locator("#audit-empty").waitFor();
  passed("a day without manual decisions shows none");

  // An admin blocks a customer from its view, with a note.
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(ROOT);
  await page.getByLabel("Search", { exact: true }).fill("C-149");
  await page.getByRole("button", { name: "Filter" }).first().click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await page.getByRole("button", { name: "Open customer C-149" }).first().click();
  await page.locator("#customer-title", { hasText: "Customer 149 GmbH" }).waitFor();
  await page.getByRole("button", { name: "Block", exact: true }).click();
  await page.getByText("Write a note first").waitFor();
  await page.getByLabel("Note for the block").fill("insolvency notice received");
  await page.getByRole("button", { name: "Block", exact: true }).click();
  await page.locator("#c-block-state", { hasText: "Blocked by root" }).waitFor();
  passed("an admin blocks a customer from its view, with a note");
  await page.screenshot({ path: `${SHOTS}/desk-block.png` });

  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, select")]
    .filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id || e.name));
  check(unlabelled.length === 0, "every input has a label (" + unlabelled.join(", ") + ")");
  check(problems.length === 0, "no script errors: " + problems.join("; "));
} finally {
  await browser.close();
}
console.log("desk passed");
