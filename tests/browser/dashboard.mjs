// Browser test of the framework dashboard (run by tests/tests/browser_dashboard.rs).
//
// Env: BASE_URL (the dashboard's mount point, e.g. http://127.0.0.1:PORT/eventbus),
// SCREENSHOT_DIR (where screenshots go). The service behind it holds, in
// its SQLite outbox, a backlog of one unsent row and two parked rows
// (keys park-1, park-2), and two dead letters in group "browser-billing"
// (keys poison-1, poison-2; the handler fails only the first delivery of a
// message, so a requeued one is handled).
//
// Fails (exit 1) on any page error, console error, failed request or
// unmet expectation; every wait has a deadline.
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const BASE_URL = process.env.BASE_URL;
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || ".";
if (!BASE_URL) {
  console.error("BASE_URL is required");
  process.exit(2);
}
fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });

const problems = [];
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run"],
});

function check(cond, what) {
  if (!cond) throw new Error("expectation failed: " + what);
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(10000);
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  page.on("requestfailed", (r) => problems.push("request failed: " + r.url() + " " + (r.failure()?.errorText ?? "")));
  page.on("response", (r) => { if (r.status() >= 400) problems.push("HTTP " + r.status() + " " + r.url()); });

  const cell = (testid, rowAttr, field) =>
    page.locator(`[data-testid="${testid}"] tr[${rowAttr}] [data-field="${field}"]`);
  const expectText = async (locator, text, what) => {
    try {
      await locator.filter({ hasText: new RegExp(`^${text}$`) }).first().waitFor();
    } catch (e) {
      const got = await locator.allTextContents().catch(() => []);
      throw new Error(`${what}: expected ${text}, got ${JSON.stringify(got)}`);
    }
  };

  await page.goto(BASE_URL);
  await page.waitForSelector("body[data-loaded]");
  check((await page.title()) === "eventbus dashboard", "title");

  // Outbox: three unsent rows, two of them parked; an age is shown.
  const outboxRow = '[data-testid="outboxes"] tr[data-table]';
  await expectText(page.locator(`${outboxRow} [data-field="backlog"]`), "3", "outbox backlog");
  await expectText(page.locator(`${outboxRow} [data-field="parked"]`), "2", "parked count");
  const oldest = await page.locator(`${outboxRow} [data-field="oldest"]`).textContent();
  check(/\d+(\.\d+)? (ms|s|min|h)$/.test(oldest), "oldest age shown: " + oldest);

  // Parked rows with key, attempts and error.
  const parked = page.locator('[data-testid^="parked-"] tbody tr');
  await parked.nth(1).waitFor();
  check((await parked.count()) === 2, "two parked rows");
  const p1 = parked.filter({ hasText: "park-1" });
  check((await p1.textContent()).includes("refused park-1"), "parked row shows its error");

  // Dead letters with reason and attempts.
  await expectText(page.locator('[data-testid="groups"] tr[data-group="browser-billing"] [data-field="dead-letters"]'),
    "2", "dead-letter count");
  const dead = page.locator('[data-testid="dead-letters-browser-billing"] tbody tr');
  await dead.nth(1).waitFor();
  const d1 = dead.filter({ hasText: "poison-1" });
  const d1text = await d1.textContent();
  check(d1text.includes("permanent"), "dead letter shows its reason: " + d1text);
  check(d1text.includes("first delivery fails"), "dead letter shows its error: " + d1text);
  check((await d1.locator("td.num").textContent()) === "1", "dead letter shows its attempts");

  // Inbox: the row of the one handled order.
  await expectText(page.locator('[data-testid="inboxes"] [data-field="rows"]'), "1", "inbox rows");
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, "dashboard.png"), fullPage: true });

  // Parked: retry one (it becomes an ordinary unsent row), discard the other.
  await p1.locator('button[data-action="retry"]').click();
  await expectText(page.locator(`${outboxRow} [data-field="parked"]`), "1", "parked after retry");
  await page.locator("#status").filter({ hasText: /^retried / }).waitFor();
  await parked.filter({ hasText: "park-2" }).locator('button[data-action="discard"]').click();
  await expectText(page.locator(`${outboxRow} [data-field="parked"]`), "0", "parked after discard");
  await expectText(page.locator(`${outboxRow} [data-field="backlog"]`), "2", "backlog after discard");
  await page.locator("#parked .empty").waitFor();

  // Dead letters: discard one, requeue the other (handled this time).
  await d1.locator('button[data-action="discard"]').click();
  await expectText(page.locator('[data-testid="groups"] [data-field="dead-letters"]'), "1", "dead letters after discard");
  await dead.filter({ hasText: "poison-2" }).locator('button[data-action="requeue"]').click();
  await page.locator("#status").filter({ hasText: /^requeued / }).waitFor();
  // The requeued letter is handled through the inbox: poll with the button.
  const deadline = Date.now() + 10000;
  for (;;) {
    await page.locator("#refresh").click();
    await page.locator("#status").filter({ hasText: /^updated / }).waitFor();
    const rows = await page.locator('[data-testid="inboxes"] [data-field="rows"]').textContent();
    const letters = await page.locator('[data-testid="groups"] [data-field="dead-letters"]').textContent();
    if (rows === "2" && letters === "0") break;
    if (Date.now() > deadline) throw new Error(`requeued letter not handled: inbox ${rows}, dead letters ${letters}`);
    await page.waitForTimeout(100);
  }
  await page.locator("#dead-letters .empty").waitFor();
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, "dashboard-after-actions.png"), fullPage: true });
} catch (e) {
  problems.push(String(e && e.stack || e));
} finally {
  await browser.close();
}

if (problems.length > 0) {
  console.error("dashboard browser test failed:\n" + problems.join("\n"));
  process.exit(1);
}
console.log("dashboard browser test passed");
