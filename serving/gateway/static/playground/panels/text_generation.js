// Text generation: tokens as they arrive over Server-Sent Events; Stop aborts the request, and the
// gateway cancels the generation in Triton when the client goes away.
import { answerArea, api, el, field, picker, textExamples } from "../app.js";
import { samples } from "../samples.js";

// Server-Sent Events from a fetch() body: yields {event, data} per event, as they arrive.
export async function* sseEvents(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// Why a stream stopped, as a sentence; `state` goes to data-state for the tests and styling.
export function streamEnd(err, aborted) {
  if (aborted) return ["stopped", "Stopped: you pressed Stop, and the request was cancelled."];
  if (err) return ["lost", `The stream ended early: the connection was lost (${err.message}).`];
  return ["lost", "The stream ended before the model said it was done (connection closed)."];
}

export function mount(section, models) {
  const pick = picker(models);
  const cap = Math.max(...models.map((m) => Number(m.parameters?.max_new_tokens || 512)));
  const prompt = el("textarea", { "data-role": "prompt", rows: 3 });
  prompt.value = "ROMEO:";
  const temperature = el("input", { type: "number", min: 0, max: 5, step: 0.1, value: 0.8, "data-role": "temperature" });
  const topP = el("input", { type: "number", min: 0.01, max: 1, step: 0.05, value: 1, "data-role": "top-p" });
  const maxTokens = el("input", { type: "number", min: 1, max: cap, value: Math.min(200, cap), "data-role": "max-tokens" });
  const seed = el("input", { type: "number", min: 0, placeholder: "random", "data-role": "seed" });
  const start = el("button", { type: "button", "data-action": "generate", text: "Generate" });
  const stop = el("button", { type: "button", class: "secondary", "data-action": "stop", disabled: true, text: "Stop" });
  const output = el("output", { class: "stream", "data-role": "output", "aria-live": "polite", "aria-label": "generated text" });
  const status = el("p", { class: "hint", "data-role": "status", role: "status" });
  const answer = answerArea();
  let controller = null;

  async function run() {
    controller = new AbortController();
    start.disabled = true;
    stop.disabled = false;
    output.textContent = "";
    output.dataset.state = "streaming";
    status.textContent = "Streaming…";
    answer.clear();
    const body = {
      prompt: prompt.value,
      max_new_tokens: Number(maxTokens.value),
      temperature: Number(temperature.value),
      top_p: Number(topP.value),
      model: pick.model,
      stream: true,
    };
    if (seed.value !== "") body.seed = Number(seed.value);
    if (pick.version) body.version = pick.version;
    const t0 = performance.now();
    let first = null;
    let info = null;
    let finished = false;
    try {
      const r = await api("/v1/generate", {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        signal: controller.signal,
      });
      info = r.info;
      for await (const ev of sseEvents(r.res)) {
        const data = JSON.parse(ev.data);
        // An error after the headers arrives in-band: the API's message, as for a refused request.
        if (ev.event === "error") throw Object.assign(new Error(data.error?.message || "generation failed"), { status: 0 });
        if (ev.event === "done") {
          finished = true;
          const n = data.usage?.completion_tokens ?? 0;
          const secs = (performance.now() - t0) / 1000;
          output.dataset.state = "done";
          status.textContent = `Done (${data.finish_reason}): ${n} tokens, ${(n / secs).toFixed(1)} tokens/s.`;
          const latency = `${Math.round(first ?? 0)} ms to the first token, ${Math.round(1000 * secs)} ms in all`;
          answer.show(info, { model: data.model, version: data.model_version, latency });
          continue;
        }
        if (first === null) first = performance.now() - t0;
        output.textContent += data.text;
      }
      if (!finished) throw null;
    } catch (err) {
      const aborted = controller.signal.aborted;
      if (err && !aborted && err.status !== undefined) {
        answer.fail(err); // the API refused the request: its own message
        output.dataset.state = "error";
        status.textContent = "";
      } else {
        const [state, sentence] = streamEnd(err, aborted);
        output.dataset.state = state;
        status.textContent = sentence;
        if (info) answer.show(info, { model: pick.model, ms: first ?? performance.now() - t0, note: "until it ended" });
      }
    } finally {
      start.disabled = false;
      stop.disabled = true;
    }
  }

  start.addEventListener("click", run);
  stop.addEventListener("click", () => controller?.abort());
  section.append(
    el("p", { class: "hint", text: "Character-level language models trained on Shakespeare; text streams as it is generated." }),
    pick.node,
    field("Prompt", prompt),
    el("p", { class: "hint", text: "Speech openings from plays held out of training:" }),
    textExamples(
      samples.prompts,
      (text) => {
        prompt.value = text;
        if (!start.disabled) run(); // not while a generation streams
      },
      (ex) => ex.name,
    ),
    el(
      "div",
      { class: "row" },
      field("Temperature", temperature),
      field("Top p", topP),
      field("Max tokens", maxTokens),
      field("Seed", seed),
    ),
    el("div", { class: "row" }, start, stop),
    output,
    status,
    ...answer.nodes,
  );
}
