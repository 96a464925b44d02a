// Opens HTML reports in Debian's headless chromium (playwright-core, never a
// downloaded browser) and checks what a person sees: no console errors, the
// verdict, the lanes and bars of every timeline, a tooltip on hover, zoom.
// Usage: node check-reports.mjs CASES.json SCREENSHOT_DIR
// CASES.json: [{name, file, verdict, truncated, timelines: [{ops, operations, lanes, kind}]}]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(process.env.PLAYWRIGHT_CORE_DIR + "/");
const { chromium } = require("playwright-core");

const [casesFile, shots] = process.argv.slice(2);
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
const failures = [];
function check(name, ok, what) {
  if (!ok) { failures.push(`${name}: ${what}`); }
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mapchaos-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1060, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  for (const c of cases) {
    const page = await context.newPage();
    const errors = [];
    page.on("console", (m) => { if (m.type() === "error") { errors.push(m.text()); } });
    page.on("pageerror", (e) => errors.push(String(e)));
    // Anything but the file itself is an external asset: refuse and report it.
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith("file://")) { return route.continue(); }
      errors.push("external request: " + url);
      return route.abort();
    });
    await page.goto("file://" + path.resolve(c.file));
    check(c.name, (await page.textContent("#verdict .word")) === c.verdict, `verdict is not ${c.verdict}`);
    const reason = (await page.textContent("#verdict-reason")) || "";
    check(c.name, reason.trim().length > 10, `verdict reason missing: "${reason}"`);
    check(c.name, (await page.locator("#truncated").count()) === (c.truncated ? 1 : 0),
      `truncation notice ${c.truncated ? "missing" : "shown"}`);
    const sections = await page.locator("section.witness").count();
    check(c.name, sections === c.timelines.length, `${sections} timelines, expected ${c.timelines.length}`);
    for (const [i, t] of c.timelines.entries()) {
      const tl = `#tl${i}`;
      const bars = await page.locator(`${tl} g.op`).count();
      check(c.name, bars === t.ops, `timeline ${i}: ${bars} bars, expected ${t.ops}`);
      const involved = await page.locator(`${tl} g.op.role-witness, ${tl} g.op.role-culprit`).count();
      check(c.name, involved === t.operations, `timeline ${i}: ${involved} witness bars, witness has ${t.operations} operations`);
      const lanes = await page.locator(`${tl} g.lane[data-client]`).count();
      check(c.name, lanes === t.lanes, `timeline ${i}: ${lanes} lanes, expected ${t.lanes}`);
      const kind = await page.getAttribute(`#w${i}`, "data-kind");
      check(c.name, kind === t.kind, `timeline ${i}: kind ${kind}, expected ${t.kind}`);
      const sentence = (await page.textContent(`#w${i} .sentence`)) || "";
      check(c.name, sentence.length > 20, `timeline ${i}: no witness sentence`);
      // Every bar is on screen and at least 2px wide.
      const boxes = await page.locator(`${tl} g.op rect.bar`).evaluateAll((rs) => rs.map((r) => r.getBBox().width));
      check(c.name, boxes.every((w) => w >= 2), `timeline ${i}: a bar is narrower than 2px`);
    }
    if (c.timelines.length > 0) {
      const bar = page.locator("#tl0 g.op.role-culprit, #tl0 g.op.role-witness").first();
      await bar.scrollIntoViewIfNeeded();
      await bar.hover();
      const tip = page.locator("#tooltip");
      check(c.name, await tip.isVisible(), "no tooltip on hovering a bar");
      const text = (await tip.textContent()) || "";
      check(c.name, text.includes("value before") && text.includes("call"), `tooltip says "${text}"`);
      await page.locator("#w0").screenshot({ path: path.join(shots, `${c.name}-timeline.png`) });
      // Zoom in: the bars get wider.
      const before = await page.locator("#tl0 g.op rect.bar").first().evaluate((r) => r.getBBox().width);
      await page.click('[data-zoom-for="tl0"] button[data-zoom="in"]');
      const after = await page.locator("#tl0 g.op rect.bar").first().evaluate((r) => r.getBBox().width);
      check(c.name, after > before || before >= 800, `zoom in left a bar at ${before}px -> ${after}px`);
      await page.click('[data-zoom-for="tl0"] button[data-zoom="reset"]');
    } else {
      check(c.name, (await page.locator("svg.timeline").count()) === 0, "a timeline on a page without anomalies");
    }
    if (c.charts) {
      check(c.name, (await page.locator("svg.chart").count()) >= 2, "charts missing");
      const column = page.locator("#chart-throughput rect.hover").first();
      await column.hover();
      const text = (await page.locator("#tooltip").textContent()) || "";
      check(c.name, text.includes("ops/s"), `chart tooltip says "${text}"`);
    }
    await page.mouse.move(0, 0);
    await page.screenshot({ path: path.join(shots, `${c.name}.png`), fullPage: true });
    check(c.name, errors.length === 0, `console errors: ${errors.join(" | ")}`);
    await page.close();
    console.log(`checked ${c.name}`);
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
