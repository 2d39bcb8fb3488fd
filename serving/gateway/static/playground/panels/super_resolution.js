// Super-resolution: scale and model (PSNR / GAN), the result beside bicubic with a split slider, download.
import { answerArea, api, dropzone, el, exampleButtons, field, formFile } from "../app.js";
import { samples } from "../samples.js";

// Keys' cubic kernel (a = -0.5): what "bicubic" means in most image tools.
function cubic(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x <= 1) return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1;
  if (x < 2) return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a;
  return 0;
}

// Bicubic upscale of an image element by an integer factor, on a canvas (the baseline to compare with).
export function bicubic(img, scale) {
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const src = document.createElement("canvas");
  src.width = w;
  src.height = h;
  const sctx = src.getContext("2d");
  sctx.drawImage(img, 0, 0);
  const s = sctx.getImageData(0, 0, w, h).data;
  const out = document.createElement("canvas");
  out.width = w * scale;
  out.height = h * scale;
  const octx = out.getContext("2d");
  const o = octx.createImageData(out.width, out.height);
  const clampX = (x) => Math.min(w - 1, Math.max(0, x));
  const clampY = (y) => Math.min(h - 1, Math.max(0, y));
  for (let y = 0; y < out.height; y++) {
    const sy = (y + 0.5) / scale - 0.5;
    const y0 = Math.floor(sy);
    const wy = [-1, 0, 1, 2].map((k) => cubic(sy - (y0 + k)));
    for (let x = 0; x < out.width; x++) {
      const sx = (x + 0.5) / scale - 0.5;
      const x0 = Math.floor(sx);
      const wx = [-1, 0, 1, 2].map((k) => cubic(sx - (x0 + k)));
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let j = 0; j < 4; j++) {
          const row = clampY(y0 + j - 1) * w;
          for (let i = 0; i < 4; i++) v += wy[j] * wx[i] * s[(row + clampX(x0 + i - 1)) * 4 + c];
        }
        o.data[(y * out.width + x) * 4 + c] = v;
      }
      o.data[(y * out.width + x) * 4 + 3] = 255;
    }
  }
  octx.putImageData(o, 0, 0);
  return out;
}

export function mount(section, models) {
  const param = (m, k, d) => m.parameters?.[k] ?? d;
  const scales = [...new Set(models.map((m) => Number(param(m, "scale", 2))))].sort();
  const variants = [...new Set(models.map((m) => param(m, "variant", "psnr")))].sort();
  const scale = el("select", { "data-role": "scale" }, scales.map((s) => el("option", { value: s, text: `×${s}` })));
  const variant = el(
    "select",
    { "data-role": "variant" },
    variants.map((v) => el("option", { value: v, text: v === "gan" ? "GAN (sharper textures)" : "PSNR (faithful)" })),
  );
  const version = el("input", { type: "text", inputmode: "numeric", size: 4, placeholder: "default", "data-role": "version" });
  const split = el("input", { type: "range", min: 0, max: 100, value: 50, "data-role": "split" });
  const sr = el("img", { alt: "super-resolved", "data-role": "result" });
  const bicubicImg = el("img", { class: "top", alt: "bicubic upscale", "data-role": "bicubic" });
  const divider = el("div", { class: "divider", "aria-hidden": "true" });
  const compare = el("div", { class: "compare", hidden: true }, sr, bicubicImg, divider);
  const labels = el("div", { class: "compare-labels", hidden: true }, el("span", { text: "◀ bicubic" }), el("span", { text: "model ▶" }));
  const download = el("a", { class: "button", download: "super-resolved.png", hidden: true, "data-role": "download", text: "Download PNG" });
  const answer = answerArea();
  const setSplit = () => {
    bicubicImg.style.clipPath = `inset(0 ${100 - split.value}% 0 0)`; // bicubic on the left of the line
    divider.style.left = `${split.value}%`;
  };
  split.addEventListener("input", setSplit);
  setSplit();

  async function run(blob, name) {
    try {
      const q = new URLSearchParams({ scale: scale.value, model: variant.value });
      if (version.value.trim()) q.set("version", version.value.trim());
      const { res, info } = await api(`/v1/super-resolve?${q}`, { method: "POST", body: formFile(blob, name) });
      const out = await res.blob();
      const url = URL.createObjectURL(out);
      const input = new Image();
      input.src = URL.createObjectURL(blob);
      await input.decode();
      await new Promise((ok) => {
        sr.onload = ok;
        sr.src = url;
      });
      bicubicImg.src = bicubic(input, sr.naturalWidth / input.naturalWidth).toDataURL("image/png");
      download.href = url;
      compare.hidden = labels.hidden = download.hidden = false;
      answer.show(info, { note: `${input.naturalWidth}×${input.naturalHeight} → ${sr.naturalWidth}×${sr.naturalHeight}` });
    } catch (err) {
      answer.fail(err);
    }
  }

  section.append(
    el("p", { class: "hint", text: "Upscale a small image; drag the slider to compare with plain bicubic." }),
    el("div", { class: "row" }, field("Scale", scale), field("Model", variant), field("Version", version)),
    el(
      "div",
      { class: "cols" },
      el("div", {}, dropzone("Upload an image", run), el("p", { class: "hint", text: "Held-out photos:" }), exampleButtons(samples.photos, run)),
      el(
        "div",
        {},
        el("figure", {}, compare, labels),
        el("div", { class: "row" }, field("Bicubic | model", split), download),
        ...answer.nodes,
      ),
    ),
  );
}
