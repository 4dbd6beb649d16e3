// Screenshots of the plugin manager page's main views, written to
// docs/ui/ (run by hand: scripts/ui-screenshots; CI never writes to the
// tree). A real daemon, project and Python plugins, as the browser test.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { Setup, chromiumPath, chromiumArgs, missing, repo } from "./harness.mjs";

const why = missing();
if (why) {
  console.error(`error: ${why}`);
  process.exit(1);
}
const out = join(repo, "docs", "ui");
mkdirSync(out, { recursive: true });
const setup = new Setup();
const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
try {
  setup.prepare();
  // `notify` asks for more after an update: it shows a pending grant.
  setup.taskrush(["plugin", "revoke", "notify"]);
  const viewport = { width: 1366, height: 860 };
  for (const scheme of ["light", "dark"]) {
    const context = await browser.newContext({ viewport, colorScheme: scheme, deviceScaleFactor: 1 });
    const page = await context.newPage();
    await page.goto(setup.link().url);
    await page.locator("article h3").first().waitFor();
    await page.locator("#live.on").waitFor();
    setup.taskrush(["test"]);
    setup.taskrush(["lint"]);
    await page.locator("#runs td", { hasText: "lint success" }).first().waitFor();
    await page.locator("table.hook-metrics").first().waitFor({ state: "attached" });
    await page.screenshot({ path: join(out, `plugins-${scheme}.png`) });
    if (scheme === "light") {
      await page.locator("article", { has: page.locator("h3", { hasText: "guard" }) })
        .getByRole("button", { name: "Revoke…" }).click();
      await page.locator("dialog[open]").waitFor();
      await page.screenshot({ path: join(out, "revoke-confirmation.png") });
      await page.keyboard.press("Escape");
      await page.locator("#registry-q").fill("lint");
      await page.locator("#registry-form button").click();
      await page.locator("#registry p:not(.muted), #registry article").first().waitFor();
      await page.locator("#runs-h").scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(out, "runs-and-registry.png"), fullPage: true });
    }
    await context.close();
  }
  console.log(`wrote the screenshots to ${out}`);
} finally {
  await browser.close();
  setup.stop();
}
