// Denoising: the noisy input and the model's output, side by side, with a download link.
import { answerArea, api, dropzone, el, exampleButtons, formFile, picker } from "../app.js";
import { samples } from "../samples.js";

export function mount(section, models) {
  const pick = picker(models);
  const before = el("img", { class: "shown", alt: "the noisy input", "data-role": "before" });
  const after = el("img", { class: "shown", alt: "the denoised output", "data-role": "after" });
  const download = el("a", { class: "button", download: "denoised.png", hidden: true, text: "Download PNG" });
  const pictures = el(
    "div",
    { class: "cols", hidden: true },
    el("figure", {}, before, el("figcaption", { text: "before" })),
    el("figure", {}, after, el("figcaption", { text: "after" })),
  );
  const answer = answerArea();

  async function run(blob, name) {
    try {
      const { res, info } = await api(`/v1/denoise?${pick.query()}`, { method: "POST", body: formFile(blob, name) });
      const url = URL.createObjectURL(await res.blob());
      before.src = URL.createObjectURL(blob);
      after.src = url;
      download.href = url;
      pictures.hidden = download.hidden = false;
      answer.show(info);
    } catch (err) {
      answer.fail(err);
    }
  }

  section.append(
    el("p", { class: "hint", text: "Remove Gaussian noise from a photo." }),
    pick.node,
    el(
      "div",
      { class: "cols" },
      el("div", {}, dropzone("Upload an image", run), el("p", { class: "hint", text: "A held-out photo with noise:" }), exampleButtons(samples.noisy, run)),
      el("div", {}, pictures, download, ...answer.nodes),
    ),
  );
}
