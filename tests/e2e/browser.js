// Pages in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core), read the way a
// person reads them: through what the DOM shows.
// Usage: node browser.js PAGES_JSON
// PAGES_JSON: [{"url": "...", "fill": {"#nsp": "/admin", ...}, "click": "#connect",
//               "ready": "body[data-status=connected]"}, ...]
// Each page is opened; its `fill` selectors are typed into and `click` clicked; once `ready` matches
// it prints {"ready": INDEX}. Every element matching `.event` that appears is printed once as
// {"page": INDEX, "text": ..., "data": {...dataset}}. Commands on stdin, one per line:
//   screenshot INDEX PATH    -> {"screenshot": PATH}
//   text INDEX SELECTOR      -> {"text": ..., "selector": SELECTOR} (the element's textContent)
// or, as a JSON line, one step answered with {"done": N, ...} or {"done": N, "error": ...}:
//   {"n": N, "page": INDEX, "do": "click" | "fill" | "select" | "wait" | "text" | "texts" |
//    "widths" | "screenshot", "selector": ..., "value": ... (fill, select), "path": ..., "width"/"height"
//    (screenshot)}
//   "wait" waits (15 s at most) for the selector; "texts" answers every match's textContent;
//   "widths" resizes the window to "width" and answers the page's and the window's widths.
// Dialogs (confirm) are accepted, as the person who clicked would. Exits when stdin closes.
const { chromium } = require("playwright-core");
const readline = require("node:readline");

const pages = JSON.parse(process.argv[2]);
const print = (value) => console.log(JSON.stringify(value));

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // As root and on a closed network: no sandbox, nothing that calls home.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const opened = [];
  for (const [index, spec] of pages.entries()) {
    const page = await browser.newPage({ viewport: { width: 1000, height: 720 } });
    page.on("pageerror", (err) => print({ page: index, pageerror: err.message }));
    page.on("dialog", (dialog) => {
      print({ page: index, dialog: dialog.message() });
      dialog.accept();
    });
    await page.goto(spec.url);
    for (const [selector, value] of Object.entries(spec.fill || {})) {
      await page.fill(selector, value);
    }
    if (spec.click) await page.click(spec.click);
    await page.waitForSelector(spec.ready || "body", { timeout: 15000 });
    opened.push(page);
    print({ ready: index });
  }

  // New `.event` elements, each printed once (marked as seen in the page itself).
  const poll = async () => {
    for (const [index, page] of opened.entries()) {
      const fresh = await page.$$eval(".event:not([data-printed])", (items) =>
        items.reverse().map((item) => {
          item.dataset.printed = "1";
          const { printed, ...data } = item.dataset;
          return { text: item.textContent, data };
        }),
      );
      for (const item of fresh) print({ page: index, ...item });
    }
  };
  const timer = setInterval(() => poll().catch((err) => print({ error: err.message })), 100);

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim().startsWith("{")) {
      const step = JSON.parse(line);
      print({ done: step.n, ...(await run(opened[step.page], step).catch((err) => ({ error: err.message }))) });
      continue;
    }
    const [command, index, ...rest] = line.trim().split(" ");
    const page = opened[Number(index)];
    if (command === "screenshot") {
      await page.screenshot({ path: rest.join(" "), fullPage: true });
      print({ screenshot: rest.join(" ") });
    } else if (command === "text") {
      const selector = rest.join(" ");
      print({ selector, text: await page.textContent(selector) });
    }
  }
  clearInterval(timer);
  await browser.close();
}

// One JSON step on `page`.
async function run(page, step) {
  switch (step.do) {
    case "click":
      await page.click(step.selector, { timeout: 15000 });
      return {};
    case "fill":
      await page.fill(step.selector, step.value, { timeout: 15000 });
      return {};
    case "select":
      await page.selectOption(step.selector, step.value, { timeout: 15000 });
      return {};
    case "wait":
      await page.waitForSelector(step.selector, { timeout: 15000 });
      return {};
    case "text":
      return { text: await page.textContent(step.selector, { timeout: 15000 }) };
    case "texts":
      return { texts: await page.$$eval(step.selector, (all) => all.map((e) => e.textContent)) };
    case "screenshot":
      if (step.width) await page.setViewportSize({ width: step.width, height: step.height || 720 });
      await page.screenshot({ path: step.path, fullPage: true });
      return {};
    case "widths":
      // The page's width against the window's, at a window `width` wide: wider means it overflows.
      await page.setViewportSize({ width: step.width, height: step.height || 720 });
      return await page.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        window: window.innerWidth,
      }));
    default:
      throw new Error(`unknown step ${step.do}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
