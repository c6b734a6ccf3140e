// The twin's web page: ask, watch the streamed answer, see its sources and version, rate it.
// Plain browser APIs only (fetch and a stream reader); everything is served by the API itself.
"use strict";
const $ = (id) => document.getElementById(id);
let traceId = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value || localStorage.getItem("twin-api-key") || "";
  if (key) { h["Authorization"] = "Bearer " + key; localStorage.setItem("twin-api-key", key); }
  return h;
}

async function loadAuthors() {
  try {
    const reply = await fetch("/v1/models", { headers: headers() });
    const body = await reply.json();
    for (const m of body.data || []) {
      const option = document.createElement("option");
      option.value = m.id.replace(/^twin-/, "");
      option.textContent = m.author_name || option.value;
      $("author").appendChild(option);
    }
  } catch (e) { showError("cannot list the twins: " + e); }
}

function showError(text) { $("error").textContent = text; $("status").textContent = "failed"; }

function showFinal(body) {
  $("answer").textContent = body.answer;
  $("version").textContent = body.model_version;
  $("trace").textContent = body.trace_id;
  traceId = body.trace_id;
  const list = $("sources");
  list.replaceChildren();
  for (const s of body.sources) {
    const item = document.createElement("li");
    item.value = s.number;
    const link = document.createElement("a");
    link.href = s.url; link.textContent = s.title || s.url;
    const score = document.createElement("span");
    score.className = "score"; score.textContent = ` ${s.author_name} · score ${s.score.toFixed(3)}`;
    item.append(link, score);
    list.appendChild(item);
  }
  if (!body.sources.length) { list.innerHTML = "<li>(none)</li>"; }
  $("status").textContent = "done";
  $("rate-up").disabled = $("rate-down").disabled = false;
  document.body.dataset.state = "answered";
}

function parseEvents(buffer, onEvent) {
  let cut;
  while ((cut = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, cut);
    buffer = buffer.slice(cut + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (data) onEvent(event, JSON.parse(data));
  }
  return buffer;
}

async function ask(event) {
  if (event) event.preventDefault();
  $("error").textContent = ""; $("rated").textContent = "";
  $("result").hidden = false; $("answer").textContent = ""; $("sources").replaceChildren();
  $("status").textContent = "asking"; document.body.dataset.state = "asking";
  $("rate-up").disabled = $("rate-down").disabled = true;
  const stream = $("stream").checked;
  const request = { question: $("question").value, author: $("author").value || null, stream };
  const reply = await fetch("/v1/ask", { method: "POST", headers: headers(), body: JSON.stringify(request) });
  $("version").textContent = reply.headers.get("X-Twin-Model-Version") || "";
  if (!reply.ok) {
    const body = await reply.json().catch(() => ({}));
    return showError((body.error && body.error.message) || reply.statusText);
  }
  if (!stream) return showFinal(await reply.json());
  $("status").textContent = "streaming";
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (name, data) => {
      if (name === "token") $("answer").textContent += data.text;
      else if (name === "done") showFinal(data);
      else if (name === "error") showError(data.error.message);
    });
  }
}

async function rate(rating) {
  if (!traceId) return;
  const reply = await fetch("/v1/feedback", { method: "POST", headers: headers(),
    body: JSON.stringify({ trace_id: traceId, rating }) });
  $("rated").textContent = reply.ok ? "thanks: rating stored" : "rating failed (" + reply.status + ")";
  if (reply.ok) { $("rate-up").disabled = $("rate-down").disabled = true; document.body.dataset.state = "rated"; }
}

$("ask-form").addEventListener("submit", (e) => ask(e).catch((err) => showError(String(err))));
$("rate-up").addEventListener("click", () => rate(1));
$("rate-down").addEventListener("click", () => rate(-1));
loadAuthors().then(() => {
  // ?q=...&author=... asks at once (links into the page, and the headless test).
  const params = new URLSearchParams(location.search);
  if (params.get("author")) $("author").value = params.get("author");
  if (params.get("q")) { $("question").value = params.get("q"); ask().catch((err) => showError(String(err))); }
});
