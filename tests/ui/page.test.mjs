// The plugin manager page in a real headless Chromium: load it with its
// one-time link, see the project's plugins after a real run, restart one,
// revoke a required plugin's grant and see the next run fail closed, see a
// plugin's metrics after a run, install from a local registry; a
// browser without the cookie is refused. Run by scripts/test (`npm test`
// in tests/ui); TASKRUSH_REQUIRE_CHROMIUM=1 turns a missing browser into
// a failure instead of a skip.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Setup, chromiumPath, chromiumArgs, missing } from "./harness.mjs";

const why = missing();
if (why && process.env.TASKRUSH_REQUIRE_CHROMIUM === "1") {
  throw new Error(`the browser test cannot run: ${why}`);
}
const skip = why ? `skipped: ${why}` : false;
const noMinisign = spawnSync("minisign", ["-v"], { stdio: "ignore" }).error
  ? "skipped: the stock `minisign` CLI is not installed (scripts/test installs it)" : false;

let setup, browser, link, registry;

// A `file://` registry with `greet` 1.0.0 published by `taskrush plugin
// publish` and signed with a key made by the stock minisign CLI, set in
// the user config (as tests/scenarios/registry.rs does). Null (the test
// skips) without minisign.
function publishGreet(setup) {
  const pk = join(setup.root, "team.pub");
  const sk = join(setup.root, "team.key");
  const g = spawnSync("minisign", ["-G", "-W", "-p", pk, "-s", sk], { stdio: "ignore" });
  if (g.status !== 0) return null;
  const src = join(setup.root, "greet-src");
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, "plugin.toml"),
    'name = "greet"\nversion = "1.0.0"\ndescription = "Say hello before every task"\n' +
    'taskrush_version = ">=0.3"\nentry_point = ["python3", "-I", "main.py"]\n\n[permissions]\nenvironment = ["GREETING"]\n');
  writeFileSync(join(src, "main.py"), "print('hello')\n");
  const dir = join(setup.root, "registry");
  const p = setup.taskrush(["plugin", "publish", src, "--registry", dir, "--key", sk]);
  if (p.status !== 0) throw new Error(`plugin publish: ${p.stdout}${p.stderr}`);
  const key = readFileSync(pk, "utf8").split("\n")[1];
  const config = join(setup.env.XDG_CONFIG_HOME, "taskrush");
  mkdirSync(config, { recursive: true });
  writeFileSync(join(config, "config.toml"),
    `[[registries]]\nname = "team"\nurl = "file://${dir}"\nkeys = ["${key}"]\n`);
  return dir;
}

before(async () => {
  if (skip) return;
  setup = new Setup();
  registry = publishGreet(setup);
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
  // The metrics method's answer as the page reads it (samples fed by hand
  // here to see four points without waiting for four samples).
  const drawn = await page.evaluate((root) => {
    state.metricsNote = null;
    state.samples = {};
    for (const [i, ms] of [12, 30, 18, 44].entries()) {
      const latency = { count: 1, sum_ms: ms, p50_ms: ms, p95_ms: ms, p99_ms: ms, max_ms: ms, buckets: [] };
      for (const s of hookLatencies({ plugins: [{ root, name: "guard", hooks: [{ name: "before_task", calls: 1, latency }] }] })) {
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

test("a plugin's metrics after a run come from the daemon's metrics endpoint", { skip }, async () => {
  assert.equal(setup.taskrush(["build"]).status, 0);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(setup.link().url);
  const card = page.locator("article", { has: page.locator("h3", { hasText: "timer" }) });
  const row = card.locator("table.hook-metrics tr[data-hook=before_task]");
  await row.waitFor({ state: "attached", timeout: 20_000 }).catch(async (e) => {
    const seen = await page.evaluate(() => JSON.stringify({ project: state.project, note: state.metricsNote, metrics: state.metrics }));
    throw new Error(`${e.message}\nthe page saw: ${seen.slice(0, 2000)}`);
  });
  const calls = Number(await row.locator("td.calls").textContent());
  assert.ok(calls >= 2, `before_task calls: ${calls}`);
  assert.match(await row.textContent(), /\d+ ms/);
  assert.match(await card.textContent(), /time added/);
  await context.close();
});

test("install from a local registry: search, confirm, see it installed", { skip: skip || noMinisign }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(setup.link().url);
  await page.locator("article h3").first().waitFor();
  await page.locator("#registry-q").fill("greet");
  await page.locator("#registry-q").press("Enter");
  const card = page.locator("#registry article", { has: page.locator("h3", { hasText: "greet" }) });
  await card.waitFor();
  assert.match(await card.textContent(), /Say hello before every task/);
  await card.getByRole("button", { name: "Install…" }).click();
  const dialog = page.locator("dialog[open]");
  await dialog.waitFor();
  await dialog.getByRole("button", { name: "Install" }).click();
  await page.getByText("Installed greet").waitFor();
  const list = setup.taskrush(["plugin", "list", "--installed"]);
  assert.match(list.stdout, /greet/);
  assert.match(list.stdout, /1\.0\.0/);
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
