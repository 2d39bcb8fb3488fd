// Anomaly: the reconstruction-error score against the model's threshold, and the reconstruction.
import { answerArea, api, b64png, dropzone, el, exampleButtons, formFile, picker } from "../app.js";
import { samples } from "../samples.js";

export function mount(section, models) {
  const pick = picker(models);
  const input = el("img", { class: "shown", alt: "the input image", width: 128, height: 128 });
  const recon = el("img", { class: "shown", alt: "the autoencoder's reconstruction", width: 128, height: 128, "data-role": "reconstruction" });
  const pictures = el(
    "div",
    { class: "row", hidden: true },
    el("figure", {}, input, el("figcaption", { text: "input" })),
    el("figure", {}, recon, el("figcaption", { text: "reconstruction" })),
  );
  const verdict = el("div", { "data-role": "verdict" });
  const answer = answerArea();

  async function run(blob, name) {
    try {
      const q = pick.query({ include_reconstruction: "true" });
      const { res, info } = await api(`/v1/anomaly?${q}`, { method: "POST", body: formFile(blob, name) });
      const body = await res.json();
      input.src = URL.createObjectURL(blob);
      if (body.reconstruction_png) recon.src = b64png(body.reconstruction_png);
      pictures.hidden = false;
      // The bar spans twice the threshold, so the threshold mark sits in the middle.
      const span = Math.max(2 * body.threshold, body.score) || 1;
      verdict.dataset.score = body.score;
      verdict.dataset.threshold = body.threshold;
      verdict.replaceChildren(
        el(
          "p",
          {},
          el("span", {
            class: body.is_anomaly ? "verdict-bad" : "verdict-good",
            "data-role": "is-anomaly",
            text: body.is_anomaly ? "Anomaly" : "Normal",
          }),
          `: score ${body.score.toPrecision(4)} `,
          body.is_anomaly ? "above" : "within",
          ` the threshold ${body.threshold.toPrecision(4)}.`,
        ),
        el(
          "div",
          { class: "meter", role: "img", "aria-label": `score ${body.score.toPrecision(4)}, threshold ${body.threshold.toPrecision(4)}` },
          el("div", { class: "fill", style: { width: `${(100 * body.score) / span}%` } }),
          el("div", { class: "mark", style: { left: `${(100 * body.threshold) / span}%` } }),
        ),
      );
      answer.show(info, { model: body.model, version: body.model_version });
    } catch (err) {
      answer.fail(err);
    }
  }

  section.append(
    el("p", { class: "hint", text: "An autoencoder trained on digits: what it cannot rebuild well is unlike its training data." }),
    pick.node,
    el(
      "div",
      { class: "cols" },
      el("div", {}, dropzone("Upload an image", run), el("p", { class: "hint", text: "A held-out digit, then anomalies:" }), exampleButtons(samples.anomalies, run)),
      el("div", {}, pictures, verdict, ...answer.nodes),
    ),
  );
}
