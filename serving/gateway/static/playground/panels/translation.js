// Translation: spelled-out numbers -> digits from /v1/translate, and the cross-attention map it returns
// with return_attention (one row per output character, weights over the characters of `source`).
// The map is SVG (crisp labels at any zoom); a table under it says the same in words.
import { answerArea, api, el, field, picker, textExamples } from "../app.js";
import { samples } from "../samples.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const CELL_W = 14;
const CELL_H = 22;
const LEFT = 30; // room for the output characters
const TOP = 22; // room for the source characters

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

// A space is drawn as a middle dot so the columns of the map line up with something visible.
const shown = (c) => (c === " " ? "·" : c);

// The word (run between spaces, commas and hyphens) around source position j: what a reader looks for.
function wordAt(source, j) {
  const sep = /[ ,-]/;
  if (sep.test(source[j])) return source[j] === " " ? "a space" : `“${source[j]}”`;
  let a = j;
  let b = j;
  while (a > 0 && !sep.test(source[a - 1])) a--;
  while (b < source.length - 1 && !sep.test(source[b + 1])) b++;
  return `“${source.slice(a, b + 1)}”`;
}

const fmt = (w) => w.toFixed(2);

// The heat map: columns are the source characters, rows the output characters; darker = more weight
// (scaled to the largest weight in the map, so a long input's spread-out rows stay visible).
export function attentionMap(source, text, attention) {
  const rows = attention.length;
  const cols = source.length;
  const max = Math.max(1e-9, ...attention.flat());
  const width = LEFT + cols * CELL_W + 4;
  const height = TOP + rows * CELL_H + 4;
  const labelId = `att-${Math.random().toString(36).slice(2)}`;
  const map = svg("svg", {
    class: "attention",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": labelId,
    "data-role": "attention",
    "data-rows": rows,
    "data-cols": cols,
  });
  map.append(
    svg("title", { id: labelId }, `Cross-attention map: ${rows} output characters (rows) over ${cols} source characters (columns)`),
  );
  [...source].forEach((c, j) => {
    const t = svg("text", { x: LEFT + j * CELL_W + CELL_W / 2, y: TOP - 7, class: c === " " ? "src space" : "src" }, shown(c));
    map.append(t);
  });
  attention.forEach((row, i) => {
    map.append(svg("text", { x: LEFT - 8, y: TOP + i * CELL_H + CELL_H / 2 + 5, class: "out" }, text[i] ?? "?"));
    row.forEach((w, j) => {
      const cell = svg("rect", {
        x: LEFT + j * CELL_W,
        y: TOP + i * CELL_H,
        width: CELL_W,
        height: CELL_H,
        class: "cell",
        "fill-opacity": (w / max).toFixed(3),
        "data-w": w,
      });
      cell.append(svg("title", {}, `output “${text[i]}” (${i + 1}) ← source “${source[j]}” (${j + 1}): ${fmt(w)}`));
      map.append(cell);
    });
  });
  map.append(svg("rect", { x: LEFT, y: TOP, width: cols * CELL_W, height: rows * CELL_H, class: "frame" }));
  return map;
}

// The same map in words: per output character, the source characters it attended to most.
export function attentionTable(source, text, attention) {
  const body = attention.map((row, i) => {
    const top = row
      .map((w, j) => [w, j])
      .sort((a, b) => b[0] - a[0])
      .slice(0, 2);
    const [[w0, j0], second] = top;
    return el(
      "tr",
      {},
      el("th", { scope: "row", text: `${i + 1}: ${text[i] ?? "?"}` }),
      el("td", { text: `“${shown(source[j0])}” at ${j0 + 1}, in ${wordAt(source, j0)}` }),
      el("td", { class: "num", text: fmt(w0) }),
      el("td", { text: second ? `“${shown(source[second[1]])}” at ${second[1] + 1} (${fmt(second[0])})` : "" }),
    );
  });
  return el(
    "table",
    { class: "att-table", "data-role": "attention-table" },
    el("caption", { text: "Where each output character looked (source positions count from 1)" }),
    el(
      "thead",
      {},
      el("tr", {}, ["Output", "Most attended source character", "Weight", "Next"].map((h) => el("th", { scope: "col", text: h }))),
    ),
    el("tbody", {}, body),
  );
}

export function mount(section, models) {
  const pick = picker(models);
  const input = el("input", { type: "text", "data-role": "text", autocomplete: "off", spellcheck: "false", class: "wide" });
  input.value = samples.numbers[0]?.text ?? "five thousand";
  const withMap = el("input", { type: "checkbox", "data-role": "attention-on", checked: true });
  const go = el("button", { type: "submit", "data-action": "translate", text: "Translate" });
  const output = el("output", { class: "digits", "data-role": "output", "aria-live": "polite", "aria-label": "the translation" });
  const expected = el("p", { class: "hint", "data-role": "expected" });
  const figure = el("figure", { class: "att", "data-role": "attention-figure", hidden: true });
  const answer = answerArea();
  const vocab = () => {
    try {
      return JSON.parse(pick.info?.parameters?.source_chars ?? '""');
    } catch {
      return "";
    }
  };
  const limit = () => pick.info?.parameters?.max_source_chars ?? "128";
  const rule = el("p", { class: "hint", "data-role": "rule" });
  const setRule = () => {
    const v = vocab();
    rule.textContent = `Letters a–z, space, comma and hyphen${v && v !== " ,-abcdefghijklmnopqrstuvwxyz" ? ` (this model: “${v}”)` : ""}; case and extra spaces are ignored; at most ${limit()} characters.`;
  };
  pick.node.querySelector("[data-role=model]").addEventListener("change", setRule);
  setRule();
  let seq = 0;

  async function run(e) {
    e?.preventDefault();
    const mine = ++seq; // a newer request wins: an older answer arriving late is dropped
    go.disabled = true;
    const body = { text: input.value, model: pick.model, return_attention: withMap.checked };
    if (pick.version) body.version = pick.version;
    try {
      const { res, info } = await api("/v1/translate", {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "application/json" },
      });
      const out = await res.json();
      if (mine !== seq) return;
      output.textContent = out.text;
      output.dataset.state = "done";
      const ex = samples.numbers.find((s) => s.text === input.value);
      expected.textContent = ex
        ? `Held-out answer: ${ex.target} (${ex.target === out.text ? "the model got it right" : "the model's answer differs"}).`
        : "";
      if (out.attention && out.source !== undefined) {
        figure.replaceChildren(
          out.attention.length
            ? el(
                "div",
                { class: "scroll", tabindex: 0, role: "region", "aria-label": "Attention map (scrolls sideways on narrow screens)" },
                attentionMap(out.source, out.text, out.attention),
              )
            : el("p", { class: "hint", text: "The model wrote no characters, so there is no attention to draw." }),
          el(
            "figcaption",
            {},
            `Cross-attention: columns are the ${out.source.length} characters the model read (the input normalised: “${out.source}”; · is a space), rows the digits it wrote. Darker = more weight.`,
          ),
          out.attention.length
            ? el("details", {}, el("summary", { text: "The map as a table" }), attentionTable(out.source, out.text, out.attention))
            : null,
        );
        figure.hidden = false;
      } else {
        figure.hidden = true;
      }
      answer.show(info, { model: out.model, version: out.model_version });
    } catch (err) {
      if (mine !== seq) return;
      output.textContent = "";
      output.dataset.state = "error";
      expected.textContent = "";
      figure.hidden = true;
      answer.fail(err);
    } finally {
      if (mine === seq) go.disabled = false;
    }
  }

  const examples = textExamples(samples.numbers, (text) => {
    input.value = text;
    run();
  });

  section.append(
    el("p", { class: "hint", text: "Spelled-out English numbers to digits, one character at a time; the map shows which input characters each digit attended to." }),
    pick.node,
    el(
      "form",
      { "data-role": "form", onsubmit: run },
      Object.assign(field("Number in words", input), { className: "block" }),
      rule,
      el("div", { class: "row" }, field("Attention map", withMap), go),
    ),
    el("p", { class: "hint", text: "Held-out numbers (never trained on):" }),
    examples,
    el("p", {}, "Digits: ", output),
    expected,
    ...answer.nodes,
    figure,
  );
}
