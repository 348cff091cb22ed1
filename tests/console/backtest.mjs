// The backtest's HTML report in headless Chromium (issue 23), driven by tests/backtest.rs:
// the page renders without a script error, the charts are there (the trade-off bars, holds
// over time, the utilization distribution; the sweep's scatter when $SWEEP is set), the
// changed-orders table sorts by amount both ways, and an order's link opens its events.
// Exits non-zero on any failure; screenshots go to $SHOTS.
import { env, check, launch } from "./common.mjs";

const REPORT = env("REPORT");
const SHOTS = env("SHOTS");
const SWEEP = process.env.SWEEP === "1";

const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  page.on("request", (r) => { if (!r.url().startsWith("file:")) problems.push("fetched " + r.url()); });
  await page.goto("file://" + REPORT);
  check((await page.title()) === "credit-sentinel backtest", "the report renders");

  const section = SWEEP ? page.locator("section.candidate").first() : page.locator("section.candidate");
  const tradeoff = section.locator('svg[aria-label^="The trade-off"]');
  check(await tradeoff.count() === 1, "a trade-off chart");
  const bars = await tradeoff.locator("rect.bar").count();
  check(bars === 8, `one bar per effect (${bars})`);
  const widths = await tradeoff.locator("rect.bar").evaluateAll((r) => r.map((x) => Number(x.getAttribute("width"))));
  check(widths.some((w) => w > 0), `bars drawn to scale (${widths.join(", ")})`);
  check(await page.locator('svg[aria-label="New holds per week"] polyline.series').count() >= 2, "holds over time, a line per policy");
  const marks = await page.locator('svg[aria-label="New holds per week"] circle.mark').count();
  check(marks >= 2, `a mark per week and policy, so that a single week shows too (${marks})`);
  check(await page.locator('svg[aria-label^="Orders by utilization"] rect.bar').count() >= 14, "the utilization distribution, bars per policy");
  if (SWEEP) {
    const points = await page.locator("#sweep svg circle.point").count();
    check(points >= 2, `the sweep's scatter (${points} points)`);
  }

  // Sort the changed orders by amount (the fifth column), both ways.
  const table = section.locator("table.changed");
  const amounts = async () =>
    (await table.locator("tbody tr td:nth-child(5)").evaluateAll((c) => c.map((x) => Number(x.getAttribute("data-sort")))));
  const before = await amounts();
  check(before.length >= 2, `changed orders listed (${before.length})`);
  const header = table.locator("thead th", { hasText: "amount" });
  await header.click();
  const up = await amounts();
  check(up.every((v, i) => i === 0 || up[i - 1] <= v), `sorted by amount, ascending (${up.join(", ")})`);
  check(await header.getAttribute("aria-sort") === "ascending", "the heading says ascending");
  await header.click();
  const down = await amounts();
  check(down.every((v, i) => i === 0 || down[i - 1] >= v), `sorted by amount, descending (${down.join(", ")})`);
  await page.screenshot({ path: `${SHOTS}/backtest${SWEEP ? "-sweep" : ""}.png`, fullPage: true });

  // An order's link opens its events.
  const link = table.locator("tbody tr td a").first();
  const target = (await link.getAttribute("href")).slice(1);
  await link.click();
  const details = page.locator(`details#${target}`);
  check(await details.evaluate((d) => d.open), "the order's events open");
  const events = await details.locator("li").allInnerTexts();
  check(events.some((t) => t.includes("order.placed")), `its events listed (${events.length})`);

  check(problems.length === 0, "no page errors and nothing fetched: " + problems.join("; "));
  console.log("backtest report passed");
} finally {
  await browser.close();
}
