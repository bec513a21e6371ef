// Drives the sluice server dashboard in headless Chromium (Debian's, through playwright-core):
// the page loads, a running job's graph shows records flowing through its aggregate, its
// sink's newest rows and a chart of a numeric column appear, a savepoint is taken from the
// page, and a script with a syntax error
// is answered with the error at its line, marked in the editor.
//
//   node dashboard.mjs URL JOB_NAME [SCREENSHOT_DIR]
import { chromium } from "playwright-core";

const [url, jobName, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.locator("#jobs tr.job", { hasText: jobName }).first().click({ timeout: 30000 });
  await page.waitForFunction(
    () => [...document.querySelectorAll("#graph .vertex")].some(
      (v) => v.dataset.vertex === "GroupAggregate" && Number(v.querySelector(".rate").dataset.in) > 0),
    null,
    { timeout: 30000 },
  );
  await page.waitForFunction(() => document.querySelectorAll("#checkpoints tbody tr").length > 0, null, { timeout: 30000 });
  // Every operator shows the busy and backpressured share of its task's time.
  const shares = await page.$$eval("#graph .vertex", (vs) => vs.map((v) => [v.dataset.busy, v.dataset.backpressured]));
  if (!shares.length || shares.some(([b, p]) => !(Number(b) >= 0 && Number(p) >= 0))) {
    throw new Error(`operators without busy/backpressured shares: ${JSON.stringify(shares)}`);
  }
  // Every operator says how far its input watermark is behind (this job has none).
  const lags = await page.$$eval("#graph .vertex .watermark", (ws) => ws.map((w) => w.textContent));
  if (!lags.length || lags.some((l) => l !== "no watermark" && !l.startsWith("watermark lag "))) {
    throw new Error(`operators without a watermark line: ${JSON.stringify(lags)}`);
  }
  // The newest rows of its sink, and a chart of a numeric column over a few snapshots.
  await page.waitForFunction(() => document.querySelectorAll("#results tbody tr").length > 0, null, { timeout: 30000 });
  const header = await page.$$eval("#results thead th", (ths) => ths.map((t) => t.textContent));
  if (header.join(",") !== ",k,n") throw new Error(`the results' columns: ${header}`);
  await page.waitForFunction(
    () => (document.querySelector("#column-chart polyline")?.getAttribute("points") || "").split(" ").length >= 3,
    null,
    { timeout: 30000 },
  );
  if (shots) await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // A savepoint while the job runs: the page says where it was written.
  await page.click("#savepoint");
  await page.waitForFunction(
    () => (document.querySelector("#job-message")?.textContent || "").startsWith("savepoint written to "),
    null,
    { timeout: 30000 },
  );

  await page.fill("#sql", "CREATE TABLE x (a INT) WITH ('connector' = 'datagen');\nSELEC a FROM x;");
  await page.click("#submit");
  await page.waitForSelector("#submit-result.error", { timeout: 15000 });
  const message = await page.textContent("#submit-result");
  if (!message.startsWith("line 2, column 1:")) throw new Error(`the error is not at its line: ${message}`);
  const marked = await page.textContent("#gutter span.error");
  if (marked !== "2") throw new Error(`line 2 is not marked in the editor: ${marked}`);
  if (shots) await page.screenshot({ path: `${shots}/dashboard-error.png`, fullPage: true });
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log("ok");
} finally {
  await browser.close();
}
