// Chat: OpenAI's /v1/chat/completions over the text generators, streamed (delta chunks, then [DONE]).
import { answerArea, api, el, field, picker, textExamples } from "../app.js";
import { samples } from "../samples.js";
import { sseEvents, streamEnd } from "./text_generation.js";

export function mount(section, models) {
  const pick = picker(models);
  const log = el("ul", { class: "chat-log", "data-role": "log", "aria-live": "polite" });
  const message = el("textarea", { rows: 2, "data-role": "message" });
  message.value = "Who is there?";
  const maxTokens = el("input", { type: "number", min: 1, max: 512, value: 120, "data-role": "max-tokens" });
  const temperature = el("input", { type: "number", min: 0, max: 2, step: 0.1, value: 0.8, "data-role": "temperature" });
  const send = el("button", { type: "submit", "data-action": "send", text: "Send" });
  const stop = el("button", { type: "button", class: "secondary", "data-action": "stop", disabled: true, text: "Stop" });
  const status = el("p", { class: "hint", "data-role": "status", role: "status" });
  const answer = answerArea();
  const history = [];
  let controller = null;

  async function run(e) {
    e.preventDefault();
    const text = message.value.trim();
    if (!text) return;
    history.push({ role: "user", content: text });
    log.append(el("li", { class: "user", text }));
    const reply = el("li", { class: "assistant", "data-role": "reply" });
    log.append(reply);
    message.value = "";
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    status.textContent = "Streaming…";
    answer.clear();
    const t0 = performance.now();
    let info = null;
    let finished = false;
    try {
      const r = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: pick.model,
          messages: history,
          max_tokens: Number(maxTokens.value),
          temperature: Number(temperature.value),
          stream: true,
        }),
        signal: controller.signal,
      });
      info = r.info;
      for await (const ev of sseEvents(r.res)) {
        if (ev.data === "[DONE]") {
          finished = true;
          break;
        }
        const chunk = JSON.parse(ev.data);
        if (chunk.error) throw Object.assign(new Error(chunk.error.message), { status: 0 });
        reply.textContent += chunk.choices?.[0]?.delta?.content ?? "";
      }
      if (!finished) throw null;
      history.push({ role: "assistant", content: reply.textContent });
      status.textContent = "Done.";
      answer.show(info, { model: pick.model, ms: performance.now() - t0 });
    } catch (err) {
      if (err && err.status !== undefined && !controller.signal.aborted) {
        answer.fail(err);
        status.textContent = "";
      } else {
        status.textContent = streamEnd(err, controller.signal.aborted)[1];
      }
      history.pop(); // the turn did not complete: keep the conversation as the model saw it
    } finally {
      send.disabled = false;
      stop.disabled = true;
    }
  }

  stop.addEventListener("click", () => controller?.abort());
  const form = el(
    "form",
    { onsubmit: run },
    field("Message", message),
    el("div", { class: "row" }, field("Max tokens", maxTokens), field("Temperature", temperature), send, stop),
  );
  // a held-out play's line (its speaker dropped: in a chat, the user speaks it)
  const line = (ex) => ex.text.split("\n")[1];
  const examples = textExamples(
    samples.prompts,
    (_, ex) => {
      message.value = line(ex);
      if (!send.disabled) form.requestSubmit();
    },
    line,
  );
  section.append(
    el("p", { class: "hint", text: "The OpenAI chat API over the same models (a chat template turns messages into a prompt)." }),
    pick.node,
    log,
    form,
    el("p", { class: "hint", text: "Lines from plays held out of training:" }),
    examples,
    status,
    ...answer.nodes,
  );
}
