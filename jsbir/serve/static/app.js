// Draw-and-search page: strokes on a canvas (pen, eraser, undo, clear, width), sent as a PNG to /api/search;
// an uploaded image is sent as it is and becomes the canvas background. No library, nothing from the internet.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const strokes = [];  // {erase, width, points: [[x, y], ...]}, replayed on undo
let background = null;  // an uploaded sketch, drawn under the strokes
let tool = "pen";
let current = null;
let pending = null;  // the search in flight, so a newer one replaces it

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (background) drawContained(background);
  for (const s of strokes) drawStroke(s);
}

function drawContained(image) {
  const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
  const w = image.width * scale, h = image.height * scale;
  ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
}

function drawStroke(s) {
  ctx.strokeStyle = ctx.fillStyle = s.erase ? "#fff" : "#000";
  ctx.lineWidth = s.width;
  ctx.lineCap = ctx.lineJoin = "round";
  const [x0, y0] = s.points[0];
  if (s.points.length === 1) {  // a dot
    ctx.beginPath();
    ctx.arc(x0, y0, s.width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  for (const [x, y] of s.points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function position(event) {
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width,
          (event.clientY - rect.top) * canvas.height / rect.height];
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function setTool(name) {
  tool = name;
  for (const id of ["pen", "eraser"]) {
    $(id).classList.toggle("active", id === name);
    $(id).setAttribute("aria-pressed", String(id === name));
  }
}

function isEmpty() {
  return !background && strokes.every((s) => s.erase);
}

async function search(body, type) {
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  setStatus("Searching…");
  const k = Math.max(1, parseInt($("k").value, 10) || 1);
  try {
    const response = await fetch(`/api/search?k=${k}`, {method: "POST", headers: {"Content-Type": type}, body,
                                                          signal: controller.signal});
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    showResults(answer.results);
    setStatus(`${answer.results.length} results in ${answer.took_ms} ms`);
  } catch (error) {
    if (error.name !== "AbortError") setStatus(`Search failed: ${error.message}`, true);
  } finally {
    if (pending === controller) pending = null;
  }
}

function searchCanvas() {
  if (isEmpty()) {
    setStatus("The canvas is empty: draw something first.");
    return;
  }
  canvas.toBlob((blob) => search(blob, "image/png"), "image/png");
}

function showResults(results) {
  const grid = $("results");
  grid.replaceChildren(...results.map((r, rank) => {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.item = r.item;
    const img = document.createElement("img");
    img.src = r.url;
    img.alt = `${r.name} (${r.label})`;
    img.title = `#${rank + 1}: item ${r.item}, ${r.name}`;
    img.loading = "lazy";
    const caption = document.createElement("figcaption");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = r.name;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = r.score.toFixed(3);
    caption.append(label, score);
    tile.append(img, caption);
    return tile;
  }));
}

canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  current = {erase: tool === "eraser", width: Number($("width").value), points: [position(event)]};
  strokes.push(current);
  drawStroke(current);
});
canvas.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.points.push(position(event));
  redraw();
});
function endStroke() {
  if (!current) return;
  current = null;
  if ($("live").checked) searchCanvas();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

$("pen").addEventListener("click", () => setTool("pen"));
$("eraser").addEventListener("click", () => setTool("eraser"));
$("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if ($("live").checked && !isEmpty()) searchCanvas();
});
$("clear").addEventListener("click", () => {
  strokes.length = 0;
  background = null;
  redraw();
  $("results").replaceChildren();
  setStatus("Cleared.");
});
$("search").addEventListener("click", searchCanvas);
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  strokes.length = 0;
  try {
    background = await createImageBitmap(file);
  } catch {
    background = null;  // the browser cannot show it; the server still says why it refuses it
  }
  redraw();
  search(file, file.type || "application/octet-stream");
});

fetch("/api/info").then((r) => r.json()).then((info) => {
  $("gallery").textContent = `${info.items} photos of ${info.classes.length} classes; ` +
                             `uploads up to ${Math.round(info.max_upload_bytes / 1024)} KB, ${info.max_side} px a side.`;
  $("k").value = info.k;
  $("k").max = info.max_k;
}).catch(() => setStatus("Cannot reach the server.", true));
redraw();
