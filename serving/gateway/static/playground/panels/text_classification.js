// Text classification: a passage in, the genre labels with probabilities out, from /v1/classify-text
// (the BERT-style encoder, pre-trained with masked-language modelling, then fine-tuned).
import { answerArea, api, bars, el, field, picker, textExamples } from "../app.js";
import { samples } from "../samples.js";

// The model reads at most max_chars characters (its parameter, from /v1/models); an example is cut to
// that many at a word boundary, so the example buttons always send a text the model accepts.
function fit(text, limit) {
  if (text.length <= limit) return text;
  const cut = text.slice(0, limit + 1);
  const space = cut.lastIndexOf(" ");
  return (space > limit / 2 ? cut.slice(0, space) : cut.slice(0, limit)).trim();
}

export function mount(section, models) {
  const pick = picker(models);
  const limit = () => Number(pick.info?.parameters?.max_chars ?? 64);
  const input = el("textarea", { rows: 3, "data-role": "text", spellcheck: "false", class: "wide" });
  const count = el("span", { class: "hint", "data-role": "count", "aria-live": "polite" });
  const topK = el("select", { "data-role": "top-k" }, [3, 1].map((k) => el("option", { value: k, text: k })));
  const go = el("button", { type: "submit", "data-action": "classify-text", text: "Classify" });
  const result = el("div", { "data-role": "result", "aria-live": "polite" });
  const expected = el("p", { class: "hint", "data-role": "expected" });
  const answer = answerArea();
  const counted = () => {
    count.textContent = `${input.value.length} / ${limit()} characters`;
  };
  input.addEventListener("input", counted);
  pick.node.querySelector("[data-role=model]").addEventListener("change", counted);
  input.value = fit(samples.passages?.[0]?.text ?? "Now is the winter of our discontent", limit());
  counted();
  let seq = 0;
  let target = null; // the held-out genre of the example last picked, until the text is edited
  input.addEventListener("input", () => {
    target = null;
  });

  async function run(e) {
    e?.preventDefault();
    const mine = ++seq; // a newer request wins: an older answer arriving late is dropped
    go.disabled = true;
    const body = { text: input.value, model: pick.model, top_k: Number(topK.value) };
    try {
      const { res, info } = await api("/v1/classify-text", {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "application/json" },
      });
      const out = await res.json();
      if (mine !== seq) return;
      result.replaceChildren(bars(out.predictions.map((p) => ({ label: p.label, value: p.score }))));
      result.dataset.state = "done";
      const best = out.predictions[0]?.label;
      expected.textContent = target
        ? `From a held-out ${target} (${best === target ? "the model got it right" : `the model says ${best}`}).`
        : "";
      answer.show(info, { model: out.model, version: out.model_version });
    } catch (err) {
      if (mine !== seq) return;
      result.replaceChildren();
      result.dataset.state = "error";
      expected.textContent = "";
      answer.fail(err);
    } finally {
      if (mine === seq) go.disabled = false;
    }
  }

  const examples = textExamples(
    samples.passages ?? [],
    (text, ex) => {
      input.value = fit(text, limit());
      target = ex.target;
      counted();
      run();
    },
    (ex) => ex.name,
  );
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(e);
  });

  section.append(
    el("p", {
      class: "hint",
      text: "Which kind of play a passage comes from (comedy, history or tragedy, as the First Folio sorts them). Ctrl+Enter submits.",
    }),
    pick.node,
    el(
      "form",
      { "data-role": "form", onsubmit: run },
      Object.assign(field("Passage", input), { className: "block" }),
      count,
      el("div", { class: "row" }, field("Top k", topK), go),
    ),
    el("p", { class: "hint", text: "Passages from held-out plays (never seen in pre-training or fine-tuning):" }),
    examples,
    result,
    expected,
    ...answer.nodes,
  );
}
