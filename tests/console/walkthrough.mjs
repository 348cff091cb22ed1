// The credit desk console in headless Chromium, driven by Playwright: sign-in, the hold queue
// as a viewer (cannot release) and as an approver (releases), the released decision arriving
// in the live feed, top accounts and the customer view. Screenshots of each screen go to
// $SHOTS. Run by tests/http.rs against an engine it started; exits non-zero on any failure.
import { env, check, passed, launch } from "./common.mjs";

const BASE = env("BASE_URL");
const VIEWER = env("VIEWER_TOKEN");
const APPROVER = env("APPROVER_TOKEN");
const ORDER = env("ORDER_ID");
const CUSTOMER = env("CUSTOMER_ID");
const SHOTS = env("SHOTS");
const TIMEOUT = 30000;

const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));

  await page.goto(BASE + "/");
  await page.getByLabel("API token").waitFor();
  await page.screenshot({ path: `${SHOTS}/sign-in.png` });

  // A wrong token is refused with a message.
  await page.getByLabel("API token").fill("not-a-token-of-this-engine");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("That token is not known to this engine.").waitFor();
  passed("an unknown token is refused");
  // The browser logs that refused request (401) as a console error: expected here only.
  problems.length = 0;

  // Viewer: sees the hold and why, cannot release.
  await page.getByLabel("API token").fill(VIEWER);
  await page.getByRole("button", { name: "Sign in" }).click();
  const row = page.locator(`tr[data-order-id="${ORDER}"]`);
  await row.waitFor();
  const rowText = await row.innerText();
  check(rowText.includes("CREDIT_LIMIT_EXCEEDED"), "the held order shows its failed rule");
  check(/1000\.00/.test(rowText), "the failed rule shows its numbers (the limit)");
  check(await row.getByRole("button", { name: `Release ${ORDER}` }).isDisabled(), "a viewer cannot release");
  check(await row.getByRole("button", { name: `Reject ${ORDER}` }).isDisabled(), "a viewer cannot reject");
  check(await page.getByText("releasing and rejecting holds needs the approver role").isVisible(), "the viewer is told why");
  await page.screenshot({ path: `${SHOTS}/holds-viewer.png` });
  await page.getByRole("button", { name: "Sign out" }).click();

  // Approver: filters, then releases with a note.
  await page.getByLabel("API token").fill(APPROVER);
  await page.getByRole("button", { name: "Sign in" }).click();
  await row.waitFor();
  await page.getByLabel("Reason", { exact: true }).selectOption("CREDIT_LIMIT_EXCEEDED");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator('#view-holds table[aria-busy="false"]').waitFor();
  await row.waitFor();
  check(!(await row.getByRole("button", { name: `Release ${ORDER}` }).isDisabled()), "an approver may release");
  await page.screenshot({ path: `${SHOTS}/holds.png` });
  // Without a note nothing is sent.
  await row.getByRole("button", { name: `Release ${ORDER}` }).click();
  await page.getByText("Write a note first").waitFor();
  passed("a release needs a note");
  await row.getByLabel(`Note for ${ORDER}`).fill("customer confirmed payment by Friday");
  await row.getByRole("button", { name: `Release ${ORDER}` }).click();
  await page.getByText(`Release of ${ORDER} sent`).waitFor();
  const released = page.locator(`#feed li[data-order-id="${ORDER}"][data-status="released"]`);
  await released.waitFor();
  await page.getByText(`The engine released ${ORDER}`).waitFor();
  const feedText = await released.innerText();
  check(feedText.includes("customer confirmed payment by Friday"), "the released decision in the live feed carries the note");
  // The row stays where it was (the queue does not move under the reader) and says so.
  await page.locator(`tr.decided[data-order-id="${ORDER}"]`, { hasText: "Released by alice" }).waitFor();
  passed("the released order's row says it was released, in place");
  await page.screenshot({ path: `${SHOTS}/released.png` });

  // Top accounts, then the customer.
  await page.getByRole("button", { name: "Top accounts" }).click();
  await page.getByRole("button", { name: `Open customer ${CUSTOMER}` }).waitFor();
  await page.screenshot({ path: `${SHOTS}/top.png` });
  await page.getByRole("button", { name: `Open customer ${CUSTOMER}` }).click();
  await page.locator("#customer-title", { hasText: CUSTOMER }).waitFor();
  await page.locator("#c-chart svg").waitFor();
  const position = await page.locator("#c-position").innerText();
  check(position.includes("Exposure") && position.includes("Available"), "the customer view shows the position");
  check((await page.locator("#c-recent li").count()) > 0, "the customer view lists recent decisions");
  await page.screenshot({ path: `${SHOTS}/customer.png`, fullPage: true });

  // Contrast (WCAG AA, 4.5:1) of every visible text element against its painted background.
  const low = await page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
      .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4))
      .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
    const background = (e) => {
      for (; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const out = [];
    for (const e of document.querySelectorAll("body *")) {
      const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || !e.getClientRects().length) continue;
      const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(background(e))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5) out.push(`${e.tagName}.${e.className} ${ratio.toFixed(2)}`);
    }
    return out;
  });
  check(low.length === 0, "text contrast at least 4.5:1 on the customer view (" + low.join(", ") + ")");

  // Keyboard: the sign-out button is reachable and every input has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, select")]
    .filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id || e.name));
  check(unlabelled.length === 0, "every input has a label (" + unlabelled.join(", ") + ")");
  check(!requests.some((u) => u.includes(APPROVER) || u.includes(VIEWER)), "no token in any URL");
  check(problems.length === 0, "no script errors: " + problems.join("; "));
} finally {
  await browser.close();
}
console.log("walkthrough passed");
