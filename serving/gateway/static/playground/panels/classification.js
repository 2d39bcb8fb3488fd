// Classification: draw a digit (mouse, pen or finger) or upload an image; top-k bars from /v1/classify.
import { answerArea, api, bars, dropzone, el, exampleButtons, field, formFile, picker } from "../app.js";
import { samples } from "../samples.js";

// A 7 as strokes in unit coordinates: the keyboard's way to draw (and the browser tests').
const SEVEN = [
  [
    [0.25, 0.22],
    [0.75, 0.22],
    [0.45, 0.82],
  ],
];

export function mount(section, models) {
  const pick = picker(models);
  const canvas = el("canvas", {
    class: "draw",
    width: 280,
    height: 280,
    "data-role": "canvas",
    role: "img",
    "aria-label": "Drawing area: draw a digit with the mouse, a pen or a finger",
  });
  const ctx = canvas.getContext("2d");
  let drawn = false;
  let timer = null;
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    drawn = false;
  };
  const pen = () => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 22;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  };
  clear();

  const topK = el("select", { "data-role": "top-k" }, [3, 5, 10].map((k) => el("option", { value: k, text: k })));
  topK.value = "5";
  const out = el("div", { "data-role": "result" });
  const answer = answerArea();
  const preview = el("img", { class: "shown", alt: "the uploaded image", hidden: true, width: 140 });

  async function classify(blob, name) {
    try {
      const q = pick.query({ top_k: topK.value });
      const { res, info } = await api(`/v1/classify?${q}`, { method: "POST", body: formFile(blob, name) });
      const body = await res.json();
      const top = body.predictions[0];
      out.replaceChildren(
        el("p", {}, "Top label: ", el("strong", { "data-role": "top", text: top.label })),
        bars(body.predictions.map((p) => ({ label: p.label, value: p.score }))),
      );
      answer.show(info, { model: body.model, version: body.model_version });
      return true;
    } catch (err) {
      out.replaceChildren();
      answer.fail(err);
      return false;
    }
  }

  // An empty canvas is sent as an empty upload: the API's own 4xx says what is wrong.
  const classifyCanvas = () =>
    drawn
      ? canvas.toBlob((blob) => classify(blob, "drawing.png"), "image/png")
      : classify(new Blob([], { type: "image/png" }), "drawing.png");
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(classifyCanvas, 250); // the bars follow the drawing
  };

  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * canvas.width, ((e.clientY - r.top) / r.height) * canvas.height];
  };
  let down = false;
  canvas.addEventListener("pointerdown", (e) => {
    down = true;
    canvas.setPointerCapture(e.pointerId);
    pen();
    ctx.beginPath();
    ctx.moveTo(...at(e));
    ctx.lineTo(...at(e));
    ctx.stroke();
    drawn = true;
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!down) return;
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  const up = () => {
    if (!down) return;
    down = false;
    preview.hidden = true;
    soon();
  };
  canvas.addEventListener("pointerup", up);
  canvas.addEventListener("pointercancel", up);

  const drawStrokes = (strokes) => {
    clear();
    pen();
    for (const stroke of strokes) {
      ctx.beginPath();
      stroke.forEach(([x, y], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x * canvas.width, y * canvas.height));
      ctx.stroke();
    }
    drawn = true;
    preview.hidden = true;
    classifyCanvas();
  };

  const onFile = async (blob, name) => {
    if (await classify(blob, name)) {
      preview.src = URL.createObjectURL(blob);
      preview.hidden = false;
    }
  };

  section.append(
    el("p", { class: "hint", text: "Draw a digit, white on black, then lift the pen; or upload a picture of one." }),
    pick.node,
    el(
      "div",
      { class: "cols" },
      el(
        "div",
        {},
        canvas,
        el(
          "div",
          { class: "row" },
          el("button", { type: "button", "data-action": "draw-7", onclick: () => drawStrokes(SEVEN), text: "Draw a 7" }),
          el("button", { type: "button", class: "secondary", "data-action": "clear", onclick: () => { clear(); out.replaceChildren(); answer.clear(); }, text: "Clear" }),
          el("button", { type: "button", "data-action": "classify", onclick: classifyCanvas, text: "Classify drawing" }),
        ),
      ),
      el(
        "div",
        {},
        dropzone("Upload an image", onFile),
        el("p", { class: "hint", text: "Held-out digits (never trained on):" }),
        exampleButtons(samples.digits, onFile),
        preview,
        el("div", { class: "row" }, field("Top k", topK)),
        out,
        ...answer.nodes,
      ),
    ),
  );
}
