// The plugin manager page in a real headless Chromium: load it with its
// one-time link, see the project's plugins after a real run, restart one,
// revoke a required plugin's grant and see the next run fail closed; a
// browser without the cookie is refused. Run by scripts/test (`npm test`
// in tests/ui); TASKRUSH_REQUIRE_CHROMIUM=1 turns a missing browser into
// a failure instead of a skip.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { Setup, chromiumPath, chromiumArgs, missing } from "./harness.mjs";

const why = missing();
if (why && process.env.TASKRUSH_REQUIRE_CHROMIUM === "1") {
  throw new Error(`the browser test cannot run: ${why}`);
}
const skip = why ? `skipped: ${why}` : false;

let setup, browser, link;

before(async () => {
  if (skip) return;
  setup = new Setup();
  link = setup.prepare();
  browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, timeout: 60_000 });
});

after(async () => {
  await browser?.close();
  setup?.stop();
});

test("a browser without the cookie is refused", { skip }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const answer = await page.goto(`${link.origin}/`);
  assert.equal(answer.status(), 401);
  assert.match(await page.textContent("body"), /taskrush daemon ui/);
  // The API too, and a made-up token.
  const api = await page.goto(`${link.origin}/api/overview`);
  assert.equal(api.status(), 401);
  const wrong = await page.goto(`${link.origin}/?token=${"0".repeat(64)}`);
  assert.equal(wrong.status(), 403);
  await context.close();
});

test("the link opens the page, drops the token and shows the plugins after a run", { skip }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(link.url);
  assert.equal(page.url(), `${link.origin}/`, "the token is gone from the address");
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0].httpOnly, true);
  assert.equal(cookies[0].sameSite, "Strict");
  const guard = page.locator("article", { has: page.locator("h3", { hasText: "guard" }) });
  await guard.waitFor();
  await assert.doesNotReject(guard.getByText("required").first().waitFor());
  assert.match(await guard.textContent(), /1\.4\.0/);
  assert.match(await guard.textContent(), /environment/);
  assert.match(await guard.textContent(), /TOKEN/);
  // The run before the page opened is not in the recent list (the page's
  // server started after it), but a run now shows up live.
  await page.locator("#live.on").waitFor();
  assert.equal(setup.taskrush(["lint"]).status, 0);
  await page.locator("#runs td", { hasText: "lint success" }).first().waitFor();
  // Metrics are not in this build: the page says so politely.
  await page.getByText("not available in this daemon yet").first().waitFor();
  // First paint, for docs/performance.md.
  const fcp = await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime);
  console.log(`# first-contentful-paint: ${fcp?.toFixed(1)} ms`);
  await context.close();
});

test("hook latency samples draw a sparkline per hook", { skip }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(setup.link().url);
  await page.locator("article h3").first().waitFor();
  // The metrics method's answer as the page reads it (its sampling is
  // driven by hand here: this build answers 501 for metrics).
  const drawn = await page.evaluate((root) => {
    state.metricsNote = null;
    for (const [i, ms] of [12, 30, 18, 44].entries()) {
      for (const s of hookLatencies({ plugins: [{ root, name: "guard", hooks: { before_task: { p95_ms: ms } } }] })) {
        const key = `${s.root}\0${s.plugin}\0${s.hook}`;
        (state.samples[key] ||= []).push({ t: i, ms: s.ms });
      }
    }
    renderPlugins();
    const card = [...document.querySelectorAll("article")].find((a) => a.querySelector("h3").textContent.startsWith("guard"));
    return { points: card.querySelector("svg.spark polyline")?.getAttribute("points").split(" ").length, text: card.textContent };
  }, await page.evaluate(() => state.project));
  assert.equal(drawn.points, 4);
  assert.match(drawn.text, /before_task/);
  assert.match(drawn.text, /p95 44 ms/);
  await context.close();
});

test("restarting a plugin from the page asks first and starts a new process", { skip }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(setup.link().url);
  const card = page.locator("article", { has: page.locator("h3", { hasText: "timer" }) });
  const pid = card.locator(".pid", { hasText: /pid \d+/ });
  await pid.waitFor();
  const before = (await pid.textContent()).match(/pid (\d+)/)[1];
  // Escape closes the dialog and changes nothing (keyboard use).
  await card.getByRole("button", { name: "Restart" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("dialog[open]").waitFor();
  await page.keyboard.press("Escape");
  await page.locator("dialog[open]").waitFor({ state: "detached" }).catch(() => {});
  assert.equal(await page.locator("dialog[open]").count(), 0);
  await card.getByRole("button", { name: "Restart" }).click();
  await page.locator("dialog[open]").getByRole("button", { name: "Restart" }).click();
  await page.getByText("Restart: done for timer").waitFor();
  await card.locator(".pid", { hasText: /pid \d+/ }).filter({ hasNotText: `pid ${before} ` }).waitFor({ timeout: 20_000 });
  assert.match(await card.locator(".pid").textContent(), /1 restart\b/);
  await context.close();
});

test("revoking a required plugin's grant shows the difference and the next run fails closed", { skip }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(setup.link().url);
  const card = page.locator("article", { has: page.locator("h3", { hasText: "guard" }) });
  await card.getByRole("button", { name: "Revoke…" }).click();
  const dialog = page.locator("dialog[open]");
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /− environment: TOKEN/);
  assert.match(await dialog.textContent(), /− filesystem: \./);
  await dialog.getByRole("button", { name: "Revoke" }).click();
  await page.getByText("Revoke: done for guard").waitFor();
  await card.getByText("needs grant").waitFor();
  const run = setup.taskrush(["build"]);
  assert.notEqual(run.status, 0, `the run went on without the required plugin: ${run.stdout}`);
  assert.match(run.stderr + run.stdout, /guard/);
  // The action is in the audit trail, as the page shows it.
  const audit = setup.taskrush(["plugin", "audit", "--json"]);
  assert.match(audit.stdout, /"ui_action"/);
  assert.match(audit.stdout, /"grant_revoked"/);
  await context.close();
});
