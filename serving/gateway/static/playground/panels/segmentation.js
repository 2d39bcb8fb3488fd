// Segmentation: the class mask over the image with an opacity slider, and the class fractions.
import { answerArea, api, b64png, bars, dropzone, el, exampleButtons, field, formFile, picker } from "../app.js";
import { samples } from "../samples.js";

export function mount(section, models) {
  const pick = picker(models);
  const opacity = el("input", { type: "range", min: 0, max: 100, value: 50, "data-role": "opacity" });
  const base = el("img", { alt: "the input image", "data-role": "input" });
  // The mask PNG (palette colours) over the image: CSS opacity is the API's own blend,
  // (1 - alpha) * image + alpha * colour, so the slider needs no new request.
  const layer = el("img", { alt: "the class mask over the image", "data-role": "overlay" });
  const stack = el("div", { class: "stack", hidden: true }, base, layer);
  const fractions = el("div", { "data-role": "fractions" });
  const answer = answerArea();
  const setOpacity = () => (layer.style.opacity = String(opacity.value / 100));
  opacity.addEventListener("input", setOpacity);
  setOpacity();

  async function run(blob, name) {
    try {
      const { res, info } = await api(`/v1/segment?${pick.query()}`, { method: "POST", body: formFile(blob, name) });
      const body = await res.json();
      const palette = pick.info?.parameters?.palette ? JSON.parse(pick.info.parameters.palette) : [];
      base.src = URL.createObjectURL(blob);
      layer.src = b64png(body.mask_png);
      stack.hidden = false;
      fractions.replaceChildren(
        el("p", { class: "hint", text: `${body.width}×${body.height} pixels; share of each class:` }),
        bars(
          body.classes.map((c) => ({
            label: c.label,
            value: c.fraction,
            swatch: palette[c.index] ? `rgb(${palette[c.index].join(",")})` : null,
          })),
        ),
      );
      answer.show(info, { model: body.model, version: body.model_version });
    } catch (err) {
      answer.fail(err);
    }
  }

  section.append(
    el("p", { class: "hint", text: "Each pixel gets a class; the colours show which." }),
    pick.node,
    el(
      "div",
      { class: "cols" },
      el(
        "div",
        {},
        dropzone("Upload an image", run),
        el("p", { class: "hint", text: "Held-out scenes:" }),
        exampleButtons(samples.scenes, run),
        el("div", { class: "row" }, field("Mask opacity", opacity)),
      ),
      el("div", {}, el("figure", {}, stack), fractions, ...answer.nodes),
    ),
  );
}
