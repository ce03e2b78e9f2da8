// The page: pick or drop images, send each to /v1/predict, show verdict, realness and heatmap.
"use strict";

const state = { key: sessionStorage.getItem("fakedet-key") || "", threshold: null };
const $ = (id) => document.getElementById(id);
const PARALLEL = 4; // requests in flight at once; the server batches them on the model

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("status").textContent = message;
  $("key").focus();
}

async function loadModel() {
  const response = await fetch("v1/model", { headers: headers() });
  if (response.status === 401) {
    askForKey("Enter the server's API key to use it.");
    return;
  }
  const model = await response.json();
  state.threshold = model.threshold;
  $("model").textContent =
    `${model.mode} model, ${model.img_size} px, threshold ${model.threshold.toFixed(3)} ` +
    `(calibration: ${model.calibration ? model.calibration.method : "none"})`;
}

function card(file) {
  const item = document.createElement("li");
  item.className = "result";
  const image = document.createElement("img");
  image.src = URL.createObjectURL(file);
  image.alt = `${file.name} (uploaded)`;
  const name = document.createElement("p");
  name.className = "name";
  name.textContent = file.name;
  const outcome = document.createElement("p");
  outcome.className = "outcome";
  outcome.textContent = "Scoring…";
  item.append(image, name, outcome);
  $("results").prepend(item);
  return { item, image, outcome };
}

function show(view, row) {
  view.outcome.textContent = "";
  if (row.realness === null) {
    const reason = document.createElement("span");
    reason.className = "error";
    reason.textContent = `${row.verdict}: ${row.error}`;
    view.outcome.append(reason);
    return;
  }
  const verdict = document.createElement("span");
  verdict.className = `verdict ${row.verdict}`;
  verdict.textContent = row.verdict;
  const score = document.createElement("span");
  score.className = "realness";
  score.textContent = ` realness ${row.realness.toFixed(3)} (threshold ${row.threshold.toFixed(3)})`;
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `realness ${row.realness.toFixed(3)} of 1`);
  const mark = document.createElement("span");
  mark.className = "mark";
  mark.style.left = `calc(${(row.realness * 100).toFixed(1)}% - 1px)`;
  const cut = document.createElement("span");
  cut.className = "cut";
  cut.style.left = `${(row.threshold * 100).toFixed(1)}%`;
  bar.append(cut, mark);
  view.outcome.append(verdict, score, bar);
  if (row.explanation) {
    view.image.src = `data:image/png;base64,${row.explanation.overlay_png}`;
    view.image.alt = `${row.path}: heatmap, blue reads real and red fake`;
  }
}

async function score(file) {
  const view = card(file);
  const form = new FormData();
  form.append("files", file, file.name);
  const explain = $("explain").checked ? "1" : "0";
  try {
    const response = await fetch(`v1/predict?explain=${explain}`, {
      method: "POST",
      body: form,
      headers: headers(),
    });
    const body = await response.json();
    if (response.status === 401) {
      askForKey(body.detail);
      view.outcome.textContent = "Needs the API key: enter it, then add the image again.";
      return;
    }
    if (body.predictions) {
      show(view, body.predictions[0]);
    } else {
      view.outcome.textContent = `Error ${response.status}: ${body.detail}`;
    }
  } catch (error) {
    view.outcome.textContent = `The server did not answer (${error}).`;
  }
}

async function scoreAll(files) {
  const queue = Array.from(files);
  $("status").textContent = `Scoring ${queue.length} image${queue.length === 1 ? "" : "s"}…`;
  const lanes = Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    while (queue.length) await score(queue.shift());
  });
  await Promise.all(lanes);
  $("status").textContent = "Done.";
}

function setUp() {
  const drop = $("drop");
  $("pick").addEventListener("click", () => $("files").click());
  $("files").addEventListener("change", (event) => {
    scoreAll(event.target.files);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    scoreAll(event.dataTransfer.files);
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("key").value;
    sessionStorage.setItem("fakedet-key", state.key);
    $("key-form").hidden = true;
    $("status").textContent = "";
    loadModel();
  });
  loadModel();
}

setUp();
