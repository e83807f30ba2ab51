// Drives the system Chromium (no browser download) through the playground: on a UniNLU server
// picks the NER template, submits, and checks that the highlighted text and the chain list match
// what the API answers for the same input; on an embedding server checks the similarity bars
// against /similarity, on a rerank server the ranking against /rerank. Screenshots into OUT_DIR.
//
//   node scripts/browser-test.mjs UNINLU_URL EMBEDDING_URL RERANK_URL OUT_DIR
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE_DIR);

const [base, embeddingBase, rerankBase, outDir] = process.argv.slice(2);
const fail = (message) => {
  throw new Error(message);
};

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) fail(`${url} answered ${response.status}`);
  return response.json();
}

/** Checks that list `id` shows one row per `want` ({label, score}) in order, bars as the page draws them. */
async function checkBars(page, id, want, what) {
  const rows = await page.$$eval(`#${id} li`, (lis) => lis.map((li) => ({
    label: li.children[0].textContent,
    score: li.querySelector(".score").textContent,
    width: li.querySelector(".bar span").style.width,
  })));
  const wantRows = want.map(({ label, score }) => ({
    label,
    score: score.toFixed(3),
    width: `${Math.max(0, Math.min(1, score)) * 100}%`,
  }));
  // The browser keeps a bar's width to 4 decimals.
  const sameRow = (a, b) => a.label === b.label && a.score === b.score && Math.abs(parseFloat(a.width) - parseFloat(b.width)) < 0.01;
  if (rows.length < 2 || rows.length !== wantRows.length || !rows.every((r, i) => sameRow(r, wantRows[i]))) fail(`${what}: bars ${JSON.stringify(rows)} != API ${JSON.stringify(wantRows)}`);
  return rows.length;
}

const profile = mkdtempSync(join(tmpdir(), "nlu-browser-test-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1100, height: 900 },
});
try {
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push("console: " + m.text()));
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("requestfailed", (r) => problems.push("request failed: " + r.url()));
  page.on("request", (r) => ![base, embeddingBase, rerankBase].some((b) => r.url().startsWith(b)) && problems.push("request elsewhere: " + r.url()));

  await page.goto(base + "/");
  await page.waitForSelector("body[data-ready=uninlu]", { timeout: 30000 });
  await page.selectOption("#template", { label: "NER (named entities)" });
  const text = await page.inputValue("#text");
  const schema = JSON.parse(await page.inputValue("#schema"));
  if (Object.keys(schema).join() !== "人物,地理位置,组织机构") fail("the NER template's schema: " + JSON.stringify(schema));
  await page.click("#predict");
  await page.waitForSelector("#uninlu-result:not([hidden])", { timeout: 30000 });

  // The API's answer for the same input, asked directly.
  const response = await fetch(base + "/api/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, schema, scores: true }),
  });
  if (!response.ok) fail("API answered " + response.status);
  const answer = await response.json();
  const cost = await page.textContent("#cost");
  if (cost !== `Cost: ${response.headers.get("x-request-cost")} token positions`) fail(`the page shows ${JSON.stringify(cost)}, the API's cost is ${response.headers.get("x-request-cost")}`);
  const spans = answer.output.flat();
  if (spans.length === 0) fail("the API found no spans: the test would prove nothing");

  // Highlighted characters = the union of the API's spans, and each mark's text = that slice.
  const chars = Array.from(text);
  const expected = new Set();
  for (const s of spans) {
    if (chars.slice(s.offset[0], s.offset[1]).join("") !== s.span) fail("span text vs offset: " + JSON.stringify(s));
    for (let i = s.offset[0]; i < s.offset[1]; i++) expected.add(i);
  }
  const marks = await page.$$eval("#highlighted mark", (ms) =>
    ms.map((m) => ({ start: Number(m.dataset.start), end: Number(m.dataset.end), text: m.textContent })));
  const shown = new Set();
  for (const m of marks) {
    if (chars.slice(m.start, m.end).join("") !== m.text) fail("mark text vs offsets: " + JSON.stringify(m));
    for (let i = m.start; i < m.end; i++) shown.add(i);
  }
  const same = expected.size === shown.size && [...expected].every((i) => shown.has(i));
  if (!same) fail(`highlighted characters ${[...shown]} differ from the API's spans ${[...expected]}`);
  const pageText = await page.$eval("#highlighted", (p) => p.textContent);
  if (pageText !== text) fail("the highlighted paragraph does not show the whole text");

  // One list item per chain, each naming its items' types, spans and scores in order.
  const chains = await page.$$eval("#chains li", (lis) =>
    lis.map((li) => [...li.querySelectorAll(".chain-item")].map((c) =>
      c.querySelector(".type").textContent + "=" + c.childNodes[1].textContent + c.querySelector(".score").textContent)));
  const want = answer.output.map((chain) => chain.map((item) => `${item.type}=${item.span} ${item.score.toFixed(2)}`));
  if (JSON.stringify(chains) !== JSON.stringify(want)) fail(`chains ${JSON.stringify(chains)} != API ${JSON.stringify(want)}`);

  await page.screenshot({ path: join(outDir, "ner.png"), fullPage: true });
  console.log(`NER: ${spans.length} spans, ${marks.length} highlighted pieces, ${want.length} chains, ${cost}; screenshot ${join(outDir, "ner.png")}`);

  // Similarity: one bar per sentence, scores as the API gives them.
  await page.goto(embeddingBase + "/");
  await page.waitForSelector("body[data-ready=embedding]", { timeout: 30000 });
  const source = await page.inputValue("#source");
  const sentences = (await page.inputValue("#sentences")).split("\n").map((l) => l.trim()).filter(Boolean);
  await page.click("#compare");
  await page.waitForSelector("#similarity-result:not([hidden])", { timeout: 30000 });
  const apiScores = await postJson(embeddingBase + "/similarity", { source_sentence: source, sentences_to_compare: sentences });
  const bars = await checkBars(page, "scores", apiScores.scores.map((score, i) => ({ label: sentences[i], score })), "similarity");
  await page.screenshot({ path: join(outDir, "similarity.png"), fullPage: true });
  console.log(`similarity: ${bars} bars; screenshot ${join(outDir, "similarity.png")}`);

  // Rerank: the passages best first, scores as the API gives them.
  await page.goto(rerankBase + "/");
  await page.waitForSelector("body[data-ready=rerank]", { timeout: 30000 });
  const query = await page.inputValue("#query");
  const passages = (await page.inputValue("#passages")).split("\n").map((l) => l.trim()).filter(Boolean);
  await page.click("#rank");
  await page.waitForSelector("#rerank-result:not([hidden])", { timeout: 30000 });
  const ranked = await postJson(rerankBase + "/rerank", { query, texts: passages });
  const ranks = await checkBars(page, "ranking", ranked.map(({ index, score }) => ({ label: passages[index], score })), "rerank");
  await page.screenshot({ path: join(outDir, "rerank.png"), fullPage: true });
  console.log(`rerank: ${ranks} passages ranked; screenshot ${join(outDir, "rerank.png")}`);

  if (problems.length) fail(problems.join("\n"));
  console.log("browser test passed");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
