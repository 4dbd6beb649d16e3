// Figures for docs/performance.md, run by hand: build the release
// binaries (`cargo build --release --workspace --bins`), then
// `TASKRUSH_BIN_DIR=target/release node tests/ui/measure.mjs`. The
// daemon's RSS with 4 plugins running before the page's server starts,
// with the page open and live through 20 runs, and after 10 more page
// loads; the page's first contentful paint over those 10 fresh loads.
import { chromium } from "playwright-core";
import { Setup, chromiumPath, chromiumArgs, missing } from "./harness.mjs";

const why = missing();
if (why) { console.error(`error: ${why}`); process.exit(1); }
const rss = (s) => {
  const r = s.taskrush(["daemon", "status", "--json"]);
  if (r.status !== 0) throw new Error(`daemon status: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout).rss_bytes;
};
const mib = (b) => (b / 1048576).toFixed(1);
const setup = new Setup();
const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
try {
  for (const p of ["guard", "notify", "timer", "lint-cache"]) setup.taskrush(["plugin", "grant", p, "--yes"]);
  for (let i = 0; i < 3; i++) setup.taskrush(["test", "--force"]);
  const before = rss(setup);
  const link = setup.link();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(link.url);
  await page.locator("#live.on").waitFor();
  await page.locator("article h3").first().waitFor();
  for (let i = 0; i < 20; i++) setup.taskrush(["test", "--force"]);
  await page.waitForTimeout(1000);
  const open = rss(setup);
  const fcps = [];
  for (let i = 0; i < 10; i++) {
    const c = await browser.newContext();
    const p = await c.newPage();
    await p.goto(setup.link().url);
    await p.locator("article h3").first().waitFor();
    fcps.push(await p.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0].startTime));
    await c.close();
  }
  const after = rss(setup);
  fcps.sort((a, b) => a - b);
  console.log(`daemon RSS, 4 plugins running, no page server: ${mib(before)} MiB`);
  console.log(`daemon RSS, page open and live, after 20 runs: ${mib(open)} MiB`);
  console.log(`daemon RSS after 10 more page loads: ${mib(after)} MiB`);
  console.log(`first-contentful-paint over 10 loads: min ${fcps[0].toFixed(0)} ms, median ${fcps[5].toFixed(0)} ms, max ${fcps[9].toFixed(0)} ms`);
  await context.close();
} finally {
  await browser.close();
  setup.stop();
}
