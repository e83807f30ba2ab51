// The playground: calls the server's own API (info, api/predict, similarity, rerank) and draws the
// answers. No dependencies, nothing loaded from elsewhere. Paths are relative to the page, so it
// works under an Ingress path prefix too.
"use strict";

// The task templates of the UniNLU spec: the task is carried by the text's format and the schema.
const TEMPLATES = [
  { name: "NER (named entities)", text: "在北京冬奥会自由式中，2月8日上午，滑雪女子大跳台决赛中中国选手谷爱凌以188.25分获得金牌。",
    schema: { "人物": null, "地理位置": null, "组织机构": null } },
  { name: "Relation extraction", text: "在北京冬奥会自由式中，2月8日上午，滑雪女子大跳台决赛中中国选手谷爱凌以188.25分获得金牌。",
    schema: { "人物": { "比赛项目(赛事名称)": null, "参赛地点(城市)": null } } },
  { name: "Event extraction", text: "7月28日，天津泰达在德比战中以0-1负于天津天海。",
    schema: { "胜负(事件触发词)": { "时间": null, "败者": null, "胜者": null } } },
  { name: "Attribute sentiment", text: "#很满意，音质很好，发货速度快，值得购买",
    hint: "Start the text with # when the attribute may be implicit.",
    schema: { "属性词": { "情感词": null } } },
  { name: "Sentiment classification", text: "正向,负向|有点看不懂，但是还是觉得很不错",
    hint: "labels|text: the answer is one of the labels before |.",
    schema: { "情感分类": null } },
  { name: "Text classification", text: "民生,文化,娱乐,体育,财经,教育|北京冬奥会花样滑冰双人自由滑决赛今晚举行",
    hint: "labels|text: the answer is one of the labels before |.",
    schema: { "分类": null } },
  { name: "Text matching", text: "相似,不相似|怎么查看我的信用额度&我的信用额度是多少",
    hint: "相似,不相似|text1&text2",
    schema: { "文本匹配": null } },
  { name: "NLI (entailment)", text: "蕴含,矛盾,中立|段落1：他们在游泳池里游泳；段落2：他们在水里。",
    hint: "蕴含,矛盾,中立|段落1：…；段落2：…",
    schema: { "段落2和段落1的关系是：": null } },
  { name: "Reading comprehension", text: "谷爱凌，2003年9月3日出生于美国加利福尼亚州旧金山，中国自由式滑雪运动员。",
    hint: "The schema's key is the question; for multiple choice write opt1,opt2,…|passage.",
    schema: { "谷爱凌出生在哪里？": null } },
];

// One colour per schema type, in order of first appearance.
const COLOURS = ["#ffe58f", "#b7eb8f", "#91d5ff", "#ffadd2", "#d3adf7", "#ffd591", "#87e8de", "#eaff8f"];

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

// POSTs JSON; returns the parsed answer or throws the API's error message. A 401 reveals the
// token field (the server runs --auth jwt).
async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => null);
  if (response.status === 401) {
    $("auth").hidden = false;
    $("token").focus();
  }
  showCost(response.headers.get("X-Request-Cost"));
  if (!response.ok) {
    const error = answer && answer.error;
    throw new Error(error ? `${response.status} ${error.code}: ${error.message}` : `HTTP ${response.status}`);
  }
  return answer;
}

// The token positions the request's model work ran (what token quotas charge).
function showCost(cost) {
  $("cost").textContent = cost === null ? "" : `Cost: ${cost} token positions`;
  $("cost").hidden = cost === null;
}

async function busy(button, work) {
  button.disabled = true;
  showError("");
  try {
    await work();
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

// ---- UniNLU ----

function colourOf(type, palette) {
  if (!palette.has(type)) palette.set(type, COLOURS[palette.size % COLOURS.length]);
  return palette.get(type);
}

// The text (as code points, like the offsets) cut at every span boundary; each piece covered by
// a span becomes a <mark> naming its spans, coloured by the innermost one.
function drawSpans(text, spans, palette) {
  const chars = Array.from(text);
  const cuts = new Set([0, chars.length]);
  for (const s of spans) {
    cuts.add(s.offset[0]);
    cuts.add(s.offset[1]);
  }
  const points = [...cuts].filter((p) => p >= 0 && p <= chars.length).sort((a, b) => a - b);
  const out = $("highlighted");
  out.replaceChildren();
  for (let i = 0; i + 1 < points.length; i++) {
    const [start, end] = [points[i], points[i + 1]];
    const piece = chars.slice(start, end).join("");
    const covering = spans.filter((s) => s.offset[0] <= start && end <= s.offset[1]);
    if (covering.length === 0) {
      out.append(piece);
      continue;
    }
    covering.sort((a, b) => (a.offset[1] - a.offset[0]) - (b.offset[1] - b.offset[0]));
    const mark = document.createElement("mark");
    mark.textContent = piece;
    mark.dataset.start = start;
    mark.dataset.end = end;
    mark.title = [...new Set(covering.map((s) => `${s.type}: ${s.span} (${s.score.toFixed(2)})`))].join("\n");
    mark.style.setProperty("--hl", colourOf(covering[0].type, palette));
    if (covering.length > 1) mark.classList.add("depth-" + Math.min(covering.length, 3));
    out.append(mark);
  }
}

function drawChains(chains, palette) {
  const list = $("chains");
  list.replaceChildren();
  for (const chain of chains) {
    const li = document.createElement("li");
    for (const item of chain) {
      const el = document.createElement("span");
      el.className = "chain-item";
      el.style.setProperty("--hl", colourOf(item.type, palette));
      const type = document.createElement("span");
      type.className = "type";
      type.textContent = item.type;
      const offset = document.createElement("span");
      offset.className = "offset";
      offset.textContent = ` [${item.offset[0]}, ${item.offset[1]})`;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = ` ${item.score.toFixed(2)}`;
      score.title = "the probability the model gives this span";
      el.append(type, item.span, offset, score);
      li.append(el);
    }
    list.append(li);
  }
  if (chains.length === 0) {
    const li = document.createElement("li");
    li.className = "hint";
    li.textContent = "Nothing found.";
    list.append(li);
  }
}

function pickTemplate(index) {
  const t = TEMPLATES[index];
  $("text").value = t.text;
  $("schema").value = JSON.stringify(t.schema, null, 2);
  $("template-hint").textContent = t.hint || "";
}

function setUpUniNlu() {
  const select = $("template");
  TEMPLATES.forEach((t, i) => select.append(new Option(t.name, String(i))));
  select.addEventListener("change", () => pickTemplate(Number(select.value)));
  pickTemplate(0);
  $("uninlu-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("predict"), async () => {
      let schema;
      try {
        schema = JSON.parse($("schema").value);
      } catch (e) {
        throw new Error("The schema is not valid JSON: " + e.message);
      }
      const text = $("text").value;
      const answer = await call("api/predict", { text, schema, scores: true });
      const palette = new Map();
      const spans = answer.output.flat();
      drawSpans(text, spans, palette);
      drawChains(answer.output, palette);
      $("labels").textContent = answer.labels ? "Labels: " + answer.labels.join(", ") : "";
      $("uninlu-json").textContent = JSON.stringify(answer, null, 2);
      $("uninlu-result").hidden = false;
    });
  });
}

// ---- Embeddings ----

/** The non-blank lines of a text field. */
function lines(id) {
  return $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
}

/** Fills list `id` with one row per `{label, score}`: the label, a bar and the score. */
function drawBars(id, rows) {
  const list = $(id);
  list.replaceChildren();
  for (const { label, score } of rows) {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    // Cosines run from -1 and raw rerank scores are logits; the bar shows [0, 1].
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = score.toFixed(3);
    li.append(text, bar, value);
    list.append(li);
  }
}

function setUpSimilarity() {
  $("similarity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("compare"), async () => {
      const sentences = lines("sentences");
      const answer = await call("similarity", {
        source_sentence: $("source").value,
        sentences_to_compare: sentences,
      });
      drawBars("scores", answer.scores.map((score, i) => ({ label: sentences[i], score })));
      $("similarity-result").hidden = false;
    });
  });
}

// ---- Rerank ----

function setUpRerank() {
  $("rerank-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("rank"), async () => {
      // Best first, as the API answers.
      const ranked = await call("rerank", { query: $("query").value, texts: lines("passages"), return_text: true });
      drawBars("ranking", ranked.map(({ text, score }) => ({ label: text, score })));
      $("rerank-result").hidden = false;
    });
  });
}

// ---- Start: the view follows the served task (from /info, retried while the model loads) ----

async function start() {
  $("token").value = sessionStorage.getItem("nlu-token") || "";
  $("auth").hidden = !$("token").value;
  $("token").addEventListener("change", () => sessionStorage.setItem("nlu-token", $("token").value.trim()));
  setUpUniNlu();
  setUpSimilarity();
  setUpRerank();
  for (;;) {
    const response = await fetch("info").catch(() => null);
    if (response && response.ok) {
      const info = await response.json();
      $("model-info").textContent = `Model ${info.model} · task ${info.task}`;
      $("uninlu-view").hidden = info.task !== "uninlu";
      $("embedding-view").hidden = info.task !== "embedding";
      $("rerank-view").hidden = info.task !== "rerank";
      document.body.dataset.ready = info.task;
      return;
    }
    $("model-info").textContent = "The model is loading…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

start();
