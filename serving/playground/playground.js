// The playground: a panel for each model the server serves, chosen from its signature, calling
// the same REST API as any client (TensorFlow Serving's), and showing each request as curl.
//
//   GET  /playground/models.json        the models served, and what the page should know that a
//                                       signature does not say (a fraud row, a GAN's labels)
//   GET  /v1/models/NAME/metadata       the signatures: which panel a model gets
//   POST /v1/models/NAME:predict        what every panel sends
//
// Every model output reaches the page as text (textContent), never as markup.
"use strict";

const PEN_WIDTH = 24; // sketch pixels: an MNIST stroke (2-3 pixels) once the digit is framed
const STROKE_PAUSE_MS = 300; // the sketch is read when no stroke follows for this long
const GENERATED_IMAGES = 8; // images a generator panel asks for by default
const MAX_GENERATED_IMAGES = 32;
const NOISE_DECIMALS = 4; // keeps the curl command of a generator request short
const RECORD_SECONDS = 1.5; // a microphone take: one spoken digit with room either side
const QUIET_SHARE = 0.1; // windows quieter than this share of the loudest one's RMS are silence
const WINDOW_SECONDS = 0.016; // the models' frame step
const KEPT_QUIET_SECONDS = 0.05; // silence kept either side of the speech, as in FSDD's takes

// ---------------------------------------------------------------------------------------------
// The REST API
// ---------------------------------------------------------------------------------------------

class RequestError extends Error {}

async function getJson(path) {
  const response = await fetch(path);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new RequestError(answer.error || `${path}: HTTP ${response.status}`);
  return answer;
}

async function predict(model, body) {
  const response = await fetch(predictPath(model), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok || answer === null || answer.error) {
    const reason = answer && answer.error ? answer.error : "the answer was not JSON";
    throw new RequestError(`${response.status}: ${reason}`);
  }
  return answer;
}

function predictPath(model) {
  return `/v1/models/${encodeURIComponent(model)}:predict`;
}

function curlCommand(model, body) {
  const url = new URL(predictPath(model), window.location.href).href;
  const quoted = (text) => `'${text.replaceAll("'", "'\\''")}'`;
  return `curl -X POST ${quoted(url)} -H 'Content-Type: application/json' -d ${quoted(JSON.stringify(body))}`;
}

// Row-format answers: {"predictions": [...]}, a dict per instance, or the value itself when the
// signature has one output.
function predictionRows(answer, outputNames) {
  return answer.predictions.map((row) =>
    outputNames.length === 1 ? { [outputNames[0]]: row } : row);
}

// ---------------------------------------------------------------------------------------------
// Signatures: which panel a model gets
// ---------------------------------------------------------------------------------------------

function tensors(map) {
  return Object.entries(map || {}).map(([name, info]) => ({
    name,
    dtype: info.dtype,
    shape: info.tensor_shape && !info.tensor_shape.unknown_rank
      ? (info.tensor_shape.dim || []).map((d) => Number(d.size)) : null,
  }));
}

function describe(signatures) {
  return Object.fromEntries(Object.entries(signatures)
    .filter(([name]) => !name.startsWith("__"))
    .map(([name, def]) => [name, { name, inputs: tensors(def.inputs), outputs: tensors(def.outputs) }]));
}

const NUMERIC = new Set(["DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_HALF"]);
const isBatchOfStrings = (t) => t.dtype === "DT_STRING" && t.shape && t.shape.length === 1;
const isBatchOfNumbers = (t) => NUMERIC.has(t.dtype) && t.shape && t.shape.length === 1;

function choosePanel(signatures) {
  for (const signature of Object.values(signatures)) {
    const noise = signature.inputs.find((t) => t.name === "noise" && t.shape && t.shape.length === 2);
    const picture = signature.outputs.length === 1 && signature.outputs[0].dtype === "DT_STRING";
    if (noise && picture && signature.inputs.every((t) => t === noise || isBatchOfNumbers(t))) {
      return { kind: "generator", signature };
    }
  }
  const serving = signatures.serving_default;
  if (!serving) return { kind: "generic", signature: Object.values(signatures)[0] };
  const [only] = serving.inputs;
  const outputs = new Map(serving.outputs.map((t) => [t.name, t]));
  if (serving.inputs.length === 1 && isBatchOfStrings(only)) {
    const text = serving.outputs.find((t) => t.dtype === "DT_STRING");
    if (/image/i.test(only.name) && text) return { kind: "caption", signature: serving, text };
    if (text) return { kind: "text", signature: serving, text };
    if (outputs.has("probabilities") && /audio|wav|sound/i.test(only.name)) {
      return { kind: "audio", signature: serving };
    }
    if (outputs.has("probabilities") && /image/i.test(only.name)) {
      return { kind: "sketch", signature: serving };
    }
  }
  if (serving.inputs.length > 1 && serving.inputs.every(isBatchOfNumbers)) {
    return { kind: "form", signature: serving };
  }
  return { kind: "generic", signature: serving };
}

// ---------------------------------------------------------------------------------------------
// DOM helpers: elements from tags, attributes and text, never from markup
// ---------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

let uniqueIds = 0;
const newId = (stem) => `${stem}-${++uniqueIds}`;

function labelled(text, control) {
  control.id = control.id || newId("control");
  return [el("label", { for: control.id, text }), control];
}

function readAsBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(new Error(`could not read ${blob.name || "the file"}`));
    reader.readAsDataURL(blob);
  });
}

function formatNumber(value) {
  return Number(value).toLocaleString("en", { maximumFractionDigits: 4 });
}

// ---------------------------------------------------------------------------------------------
// A panel: its heading, controls, answer, error line and the last request as curl
// ---------------------------------------------------------------------------------------------

class Panel {
  constructor(model, kindText) {
    this.model = model;
    this.sequence = 0; // only the newest request's answer is shown
    this.answer = el("div", { class: "output", "aria-live": "polite" });
    this.error = el("p", { class: "error", role: "alert" });
    this.command = el("code");
    const copy = el("button", { type: "button", class: "secondary", text: "Copy",
                                onclick: () => this.copyCommand(copy) });
    this.request = el("details", { class: "request", hidden: "" },
      el("summary", { text: "The request, as curl" }), el("pre", {}, this.command), copy);
    this.controls = el("div", { class: "controls" });
    this.section = el("section", { class: "panel", id: `model-${model.name}`,
                                   "aria-labelledby": `title-${model.name}`,
                                   "data-model": model.name },
      el("h2", { id: `title-${model.name}`, text: `${model.name} (version ${model.version})` }),
      el("p", { class: "kind", text: kindText }),
      this.controls, this.error, this.answer, this.request);
  }

  async send(body) {
    const sequence = ++this.sequence;
    this.section.dataset.sent = String(sequence);
    this.command.textContent = curlCommand(this.model.name, body);
    this.request.hidden = false;
    this.section.setAttribute("aria-busy", "true");
    try {
      const answer = await predict(this.model.name, body);
      if (sequence !== this.sequence) return null;
      this.error.textContent = "";
      return answer;
    } catch (failure) {
      if (sequence !== this.sequence) return null;
      this.fail(failure);
      return null;
    } finally {
      if (sequence === this.sequence) { // shown: what tests and assistive tools wait for
        this.section.setAttribute("aria-busy", "false");
        this.section.dataset.done = String(sequence);
      }
    }
  }

  fail(failure) {
    this.answer.replaceChildren();
    this.error.textContent = failure instanceof RequestError ? `Error ${failure.message}`
      : failure instanceof TypeError ? `Error: the server did not answer (${failure.message})`
        : `Error: ${failure.message ?? failure}`;
  }

  show(...nodes) {
    this.answer.replaceChildren(...nodes);
  }

  async copyCommand(button) {
    try {
      await navigator.clipboard.writeText(this.command.textContent);
      button.textContent = "Copied";
    } catch {
      window.getSelection().selectAllChildren(this.command); // copy by hand
      button.textContent = "Selected: copy with Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  }
}

function probabilityBars(probabilities, labels) {
  const best = probabilities.indexOf(Math.max(...probabilities));
  return el("ol", { class: "bars", "aria-label": "Probabilities" }, ...probabilities.map((p, i) => {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    return el("li", { class: i === best ? "top" : "" },
      el("span", { text: labels[i] ?? String(i) }),
      el("span", { class: "track" }, fill),
      el("span", { class: "value", text: `${(100 * p).toFixed(1)}%` }));
  }));
}

function fileDrop(accept, what, onFile) {
  const input = el("input", { type: "file", accept });
  input.addEventListener("change", () => input.files[0] && onFile(input.files[0]));
  const zone = el("div", { class: "drop" }, ...labelled(`Choose ${what}`, input),
    el("p", { text: `or drop ${what} here`, class: "hint" }));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files[0]) onFile(event.dataTransfer.files[0]);
  });
  return zone;
}

// ---------------------------------------------------------------------------------------------
// The panels
// ---------------------------------------------------------------------------------------------

// An image classifier: draw on the sketch with mouse, pen or finger, or upload an image.
function sketchPanel(model, { signature }) {
  const panel = new Panel(model, "Image classifier: draw a digit, or upload an image");
  const labels = model.hints.labels || [];
  const input = signature.inputs[0].name;
  const canvas = el("canvas", { width: 280, height: 280, class: "sketch",
                                "aria-label": "Drawing area: draw one digit" });
  const context = canvas.getContext("2d");
  const clear = () => {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();

  let drawing = false;
  let pause = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    clearTimeout(pause);
    canvas.setPointerCapture(event.pointerId);
    Object.assign(context, { lineWidth: PEN_WIDTH, lineCap: "round", lineJoin: "round",
                             strokeStyle: "#111" });
    context.beginPath();
    context.moveTo(...point(event));
    context.lineTo(...point(event)); // a dot is a stroke too
    context.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...point(event));
    context.stroke();
  });
  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    pause = setTimeout(read, STROKE_PAUSE_MS);
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  async function classify(base64) {
    const answer = await panel.send({ instances: [{ [input]: { b64: base64 } }] });
    if (!answer) return;
    const [row] = predictionRows(answer, signature.outputs.map((t) => t.name));
    const digit = labels[row.digit] ?? String(row.digit);
    panel.show(el("p", { class: "answer" }, "Read: ", el("strong", { class: "value", text: digit })),
      probabilityBars(row.probabilities, labels));
  }
  function read() {
    clearTimeout(pause);
    classify(canvas.toDataURL("image/png").split(",")[1]);
  }
  async function upload(file) {
    try {
      const base64 = await readAsBase64(file);
      const image = new Image();
      image.onload = () => { // shown on the sketch; the file's own bytes are what is sent
        clear();
        const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
        context.drawImage(image, 0, 0, image.width * scale, image.height * scale);
        URL.revokeObjectURL(image.src);
      };
      image.src = URL.createObjectURL(file);
      await classify(base64);
    } catch (failure) {
      panel.fail(failure);
    }
  }

  panel.controls.append(canvas,
    el("div", { class: "row" },
      el("button", { type: "button", text: "Read the drawing", onclick: read }),
      el("button", { type: "button", class: "secondary", text: "Clear",
                     onclick: () => { clear(); panel.show(); } })),
    fileDrop("image/*", "an image", upload));
  return panel;
}

// An image captioner: upload or drop a photo.
function captionPanel(model, { signature, text }) {
  const panel = new Panel(model, "Image captioning: upload or drop an image");
  const input = signature.inputs[0].name;
  const preview = el("img", { class: "preview", alt: "", hidden: "" });
  async function caption(file) {
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.alt = `The image sent: ${file.name}`;
    preview.hidden = false;
    try {
      const answer = await panel.send({ instances: [{ [input]: { b64: await readAsBase64(file) } }] });
      if (!answer) return;
      const [row] = predictionRows(answer, signature.outputs.map((t) => t.name));
      const extras = signature.outputs.filter((t) => t !== text)
        .map((t) => `${t.name} ${formatNumber(row[t.name])}`).join(", ");
      panel.show(el("p", { class: "answer caption", text: row[text.name] }),
        el("p", { class: "score", text: extras }));
    } catch (failure) {
      panel.fail(failure);
    }
  }
  panel.controls.append(fileDrop("image/*", "an image", caption), preview);
  return panel;
}

// A classifier of recordings: upload a WAV file, or say it into the microphone.
function audioPanel(model, { signature }) {
  const panel = new Panel(model, "Audio classifier: record a spoken digit, or upload a WAV file");
  const labels = model.hints.labels || [];
  const input = signature.inputs[0].name;
  const player = el("audio", { controls: "", hidden: "" });
  async function classify(blob) {
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(blob);
    player.hidden = false;
    try {
      const answer = await panel.send({ instances: [{ [input]: { b64: await readAsBase64(blob) } }] });
      if (!answer) return;
      const [row] = predictionRows(answer, signature.outputs.map((t) => t.name));
      const heard = labels[row.digit] ?? String(row.digit);
      panel.show(el("p", { class: "answer" }, "Heard: ", el("strong", { class: "value", text: heard })),
        probabilityBars(row.probabilities, labels));
    } catch (failure) {
      panel.fail(failure);
    }
  }
  const record = el("button", { type: "button", text: `Record ${RECORD_SECONDS} s` });
  record.addEventListener("click", async () => {
    record.disabled = true;
    record.textContent = "Listening…";
    try {
      const { samples, rate } = await recordMicrophone(RECORD_SECONDS);
      await classify(wavFile(trimSilence(samples, rate), rate));
    } catch (failure) {
      panel.fail(new Error(`the microphone: ${failure.message}`));
    } finally {
      record.disabled = false;
      record.textContent = `Record ${RECORD_SECONDS} s`;
    }
  });
  panel.controls.append(el("div", { class: "row" }, record),
    fileDrop(".wav,audio/wav,audio/x-wav", "a WAV file", classify), player);
  return panel;
}

// Mono samples in [-1, 1] from the microphone at the browser's own rate (the served graph
// resamples: the WAV file says its rate).
async function recordMicrophone(seconds) {
  if (!navigator.mediaDevices) {
    throw new Error("not available here: browsers open it to https:// and localhost pages only");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const context = new AudioContext();
  try {
    const source = context.createMediaStreamSource(stream);
    const tap = context.createScriptProcessor(4096, 1, 1); // a copy of each block, main thread
    const wanted = Math.round(seconds * context.sampleRate);
    const samples = new Float32Array(wanted);
    let filled = 0;
    await new Promise((resolve) => {
      tap.onaudioprocess = (event) => {
        const block = event.inputBuffer.getChannelData(0).subarray(0, wanted - filled);
        samples.set(block, filled);
        filled += block.length;
        if (filled >= wanted) resolve();
      };
      source.connect(tap);
      tap.connect(context.destination); // a processor that reaches no output is never run
    });
    return { samples, rate: context.sampleRate };
  } finally {
    stream.getTracks().forEach((track) => track.stop());
    context.close();
  }
}

// The take from its first loud window to its last, with a little quiet either side.
function trimSilence(samples, rate) {
  const width = Math.round(WINDOW_SECONDS * rate);
  const levels = [];
  for (let start = 0; start + width <= samples.length; start += width) {
    let power = 0;
    for (let i = start; i < start + width; i++) power += samples[i] * samples[i];
    levels.push(Math.sqrt(power / width));
  }
  const loudest = Math.max(...levels);
  if (!(loudest > 0)) return samples;
  const loud = levels.map((level) => level >= QUIET_SHARE * loudest);
  const margin = Math.round(KEPT_QUIET_SECONDS * rate);
  const first = Math.max(0, loud.indexOf(true) * width - margin);
  const last = Math.min(samples.length, (loud.lastIndexOf(true) + 1) * width + margin);
  return samples.subarray(first, last);
}

// A 16-bit PCM mono WAV file (what TensorFlow's decode_wav reads).
function wavFile(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (at, value) => [...value].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples.length, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // the format chunk's size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // one channel
  view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true); // bytes a second
  view.setUint16(32, 2, true); // bytes a frame
  view.setUint16(34, 16, true); // bits a sample
  text(36, "data");
  view.setUint32(40, 2 * samples.length, true);
  samples.forEach((value, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, value)) * 32767, true));
  return new Blob([view], { type: "audio/wav" });
}

// Strings in, strings out (a translator): one request line each.
function textPanel(model, { signature, text }) {
  const panel = new Panel(model, "Text: one sentence a line, each translated");
  const input = signature.inputs[0].name;
  const box = el("textarea", { rows: 4, placeholder: "One sentence a line" });
  async function translate() {
    const lines = box.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (!lines.length) {
      panel.fail(new Error("nothing to send: write a sentence first"));
      return;
    }
    const answer = await panel.send({ instances: lines.map((line) => ({ [input]: line })) });
    if (!answer) return;
    const rows = predictionRows(answer, signature.outputs.map((t) => t.name));
    panel.show(el("ol", { class: "results" }, ...rows.map((row) => {
      const others = signature.outputs.filter((t) => t !== text)
        .map((t) => `${t.name} ${formatNumber(row[t.name])}`).join(", ");
      return el("li", {}, el("span", { class: "translation", text: row[text.name] }), " ",
        el("span", { class: "score", text: others ? `(${others})` : "" }));
    })));
  }
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) translate();
  });
  panel.controls.append(...labelled("Sentences (Ctrl+Enter sends)", box),
    el("div", { class: "row" }, el("button", { type: "button", text: "Translate", onclick: translate })));
  return panel;
}

// A generator: images from seeded standard-normal noise, and a class where it takes one.
function generatorPanel(model, { signature }) {
  const panel = new Panel(model, "Image generator: a grid of generated images");
  const noise = signature.inputs.find((t) => t.name === "noise");
  const label = signature.inputs.find((t) => t !== noise);
  const labels = model.hints.labels || Array.from({ length: 10 }, (_, i) => String(i));
  const classChoice = label && el("select", {}, ...labels.map((name, i) =>
    el("option", { value: String(i), text: name })));
  const seed = el("input", { type: "number", value: "1", min: "0", step: "1" });
  const count = el("input", { type: "number", value: String(GENERATED_IMAGES), min: "1",
                              max: String(MAX_GENERATED_IMAGES), step: "1" });
  async function generate() {
    const n = Math.min(Math.max(1, Math.round(Number(count.value)) || 1), MAX_GENERATED_IMAGES);
    const normal = seededNormal(Math.round(Number(seed.value)) || 0);
    const instances = Array.from({ length: n }, () => ({
      [noise.name]: Array.from({ length: noise.shape[1] },
        () => Number(normal().toFixed(NOISE_DECIMALS))),
      ...(label ? { [label.name]: Number(classChoice.value) } : {}),
    }));
    const body = signature.name === "serving_default"
      ? { instances } : { signature_name: signature.name, instances };
    const answer = await panel.send(body);
    if (!answer) return;
    const output = signature.outputs[0].name;
    const rows = predictionRows(answer, [output]);
    const what = label ? `a generated ${labels[Number(classChoice.value)]}` : "a generated image";
    panel.show(el("div", { class: "grid" }, ...rows.map((row) =>
      el("img", { src: `data:image/png;base64,${row[output].b64}`, alt: what }))));
  }
  panel.controls.append(
    el("div", { class: "row" },
      label ? el("span", { class: "pair" }, ...labelled("Class", classChoice)) : null,
      el("span", { class: "pair" }, ...labelled("Seed", seed)),
      el("span", { class: "pair" }, ...labelled("Images", count))),
    el("div", { class: "row" }, el("button", { type: "button", text: "Generate", onclick: generate })));
  return panel;
}

// Standard-normal numbers from a seed (mulberry32 and Box-Muller): a seed gives the same images.
function seededNormal(seed) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

// Named numeric inputs (a fraud detector): a field each, prefilled with a normal row.
function formPanel(model, { signature }) {
  const panel = new Panel(model, "Scorer: one field per named input");
  const example = model.hints.example || {};
  const threshold = model.hints.threshold;
  // In the order of the example row (the training data's columns) where there is one.
  const order = Object.keys(example);
  const rank = (t) => (order.includes(t.name) ? order.indexOf(t.name) : order.length);
  const inputs = [...signature.inputs].sort((a, b) => rank(a) - rank(b));
  const fields = inputs.map((t) => el("input", {
    type: "number", step: "any", required: "", name: t.name,
    value: example[t.name] !== undefined ? String(example[t.name]) : "0",
  }));
  const form = el("form", { class: "fields" }, ...fields.flatMap((field) => labelled(field.name, field)));
  async function score(event) {
    event.preventDefault();
    const instance = Object.fromEntries(inputs.map((t, i) => [t.name,
      t.dtype.startsWith("DT_INT") ? Math.round(Number(fields[i].value)) : Number(fields[i].value)]));
    const answer = await panel.send({ instances: [instance] });
    if (!answer) return;
    const [row] = predictionRows(answer, signature.outputs.map((t) => t.name));
    const flagged = row.is_anomaly === true || (threshold !== undefined && row.score > threshold);
    const verdict = flagged ? "flagged as anomalous" : "normal";
    panel.show(
      el("p", { class: `answer${flagged ? " flagged" : ""}` }, "Score ",
        el("strong", { class: "value", text: formatNumber(row.score) }),
        threshold !== undefined ? ` against the threshold ${formatNumber(threshold)}: ` : ": ",
        el("span", { class: "verdict", text: verdict })),
      el("p", { class: "score", text: signature.outputs.filter((t) => t.name !== "score")
        .map((t) => `${t.name}: ${row[t.name]}`).join(", ") }));
  }
  form.addEventListener("submit", score);
  form.append(el("div", { class: "row buttons" }, // Enter in a field scores too
    el("button", { type: "submit", text: "Score" }),
    el("button", { type: "reset", class: "secondary",
                   text: example && Object.keys(example).length ? "Reset to the normal row" : "Reset" })));
  panel.controls.append(form);
  return panel;
}

// Anything else: the signature, and a JSON request to edit and send.
function genericPanel(model, { signature }) {
  const panel = new Panel(model, `Signature ${signature.name}: edit the JSON request and send it`);
  const rows = [...signature.inputs.map((t) => ["input", t]), ...signature.outputs.map((t) => ["output", t])];
  const table = el("table", { class: "signature" },
    el("thead", {}, el("tr", {}, ...["", "name", "type", "shape"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map(([side, t]) => el("tr", {},
      el("td", { text: side }), el("td", { text: t.name }), el("td", { text: t.dtype }),
      el("td", { text: t.shape ? `[${t.shape.join(", ")}]` : "any" })))));
  const example = (t) => {
    const leaf = t.dtype === "DT_STRING" ? "" : t.dtype === "DT_BOOL" ? false : 0;
    return (t.shape || [-1]).slice(1).reduceRight((inner, size) =>
      Array.from({ length: Math.max(size, 1) }, () => inner), leaf);
  };
  const skeleton = {
    ...(signature.name === "serving_default" ? {} : { signature_name: signature.name }),
    instances: [Object.fromEntries(signature.inputs.map((t) => [t.name, example(t)]))],
  };
  const box = el("textarea", { rows: 8, spellcheck: "false" });
  box.value = JSON.stringify(skeleton);
  async function send() {
    let body;
    try {
      body = JSON.parse(box.value);
    } catch (failure) {
      panel.fail(new Error(`the request is not JSON: ${failure.message}`));
      return;
    }
    const answer = await panel.send(body);
    if (answer) panel.show(el("pre", { class: "json", text: JSON.stringify(answer, null, 1) }));
  }
  panel.controls.append(table, ...labelled("Request (JSON)", box),
    el("div", { class: "row" }, el("button", { type: "button", text: "Send", onclick: send })));
  return panel;
}

const PANELS = {
  sketch: sketchPanel,
  caption: captionPanel,
  audio: audioPanel,
  text: textPanel,
  generator: generatorPanel,
  form: formPanel,
  generic: genericPanel,
};

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

async function modelPanel(model) {
  try {
    const metadata = await getJson(`/v1/models/${encodeURIComponent(model.name)}/metadata`);
    const choice = choosePanel(describe(metadata.metadata.signature_def.signature_def));
    const panel = PANELS[choice.kind](model, choice);
    panel.section.dataset.kind = choice.kind;
    return panel.section;
  } catch (failure) {
    return el("section", { class: "panel", "data-model": model.name, "data-kind": "unavailable" },
      el("h2", { text: model.name }), el("p", { class: "error", role: "alert",
                                                 text: `Could not read its signatures: ${failure.message}` }));
  }
}

async function start() {
  const status = document.getElementById("page-status");
  try {
    const { models } = await getJson("/playground/models.json");
    const sections = await Promise.all(models.map(modelPanel));
    document.getElementById("panels").replaceChildren(...sections);
    document.getElementById("model-links").replaceChildren(...models.map((model) =>
      el("li", {}, el("a", { href: `#model-${model.name}`, text: model.name }))));
    if (!models.length) {
      document.getElementById("panels").append(el("p", { role: "status",
        text: "No model is served yet: export one into the model base (python -m apps.digit_ocr export)." }));
    }
  } catch (failure) {
    status.textContent = `Could not list the models: ${failure.message}`;
  }
  document.body.dataset.ready = "true";
  performance.mark("playground-ready");
}

start();
