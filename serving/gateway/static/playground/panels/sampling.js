// Sampling: a grid of images drawn from a GAN generator; the seed makes it reproducible.
import { answerArea, api, el, field, picker } from "../app.js";

export function mount(section, models) {
  const pick = picker(models);
  const n = el("input", { type: "number", min: 1, max: 16, value: 8, "data-role": "n" });
  const seed = el("input", { type: "number", min: 0, placeholder: "random", "data-role": "seed" });
  const grid = el("img", { class: "shown", alt: "generated samples", hidden: true, "data-role": "grid", width: 320 });
  const answer = answerArea();

  async function run() {
    const body = { n: Number(n.value), model: pick.model, format: "png" };
    if (seed.value !== "") body.seed = Number(seed.value);
    try {
      const { res, info } = await api(`/v1/sample${pick.version ? `?version=${pick.version}` : ""}`, {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "application/json" },
      });
      grid.src = URL.createObjectURL(await res.blob());
      grid.hidden = false;
      const drawn = res.headers.get("x-seed");
      answer.show(info, { note: drawn ? `seed ${drawn}` : "" });
    } catch (err) {
      answer.fail(err);
    }
  }

  section.append(
    el("p", { class: "hint", text: "New digits from noise; the same seed draws the same images." }),
    pick.node,
    el("div", { class: "row" }, field("Images", n), field("Seed", seed), el("button", { type: "button", "data-action": "sample", onclick: run, text: "Draw" })),
    grid,
    ...answer.nodes,
  );
}
