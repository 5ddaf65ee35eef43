// A dependency-free SVG chart: bars for one series (left axis), a line for a second (right axis).
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** points: [{label, bar, line}]; returns an <svg role="img"> described by `title`. */
export function barLineChart(points, { title, barName, lineName, lineFormat = String }) {
  const W = 720, H = 260, L = 44, R = 64, T = 14, B = 34;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("title", {}, title));
  const maxBar = Math.max(1, ...points.map((p) => p.bar));
  const maxLine = Math.max(1, ...points.map((p) => p.line));
  const step = (W - L - R) / Math.max(points.length, 1);
  const y = (v, max) => T + (H - T - B) * (1 - v / max);
  for (const frac of [0, 0.5, 1]) {
    const at = y(maxBar * frac, maxBar);
    root.append(svg("line", { x1: L, x2: W - R, y1: at, y2: at, stroke: "#d0d7de" }),
      svg("text", { x: L - 6, y: at + 4, "text-anchor": "end" }, Math.round(maxBar * frac)),
      svg("text", { x: W - R + 6, y: at + 4 }, lineFormat(maxLine * frac)));
  }
  const path = [];
  points.forEach((p, i) => {
    const x = L + i * step;
    const top = y(p.bar, maxBar);
    root.append(svg("rect", { x: x + step * 0.15, y: top, width: step * 0.7, height: H - B - top, fill: "#7aa7ff" },
    ), svg("title", {}, `${p.label}: ${p.bar} ${barName}, ${lineFormat(p.line)} ${lineName}`));
    path.push(`${i ? "L" : "M"}${(x + step / 2).toFixed(1)},${y(p.line, maxLine).toFixed(1)}`);
    const every = Math.ceil(points.length / 8);
    if (i % every === 0) root.append(svg("text", { x: x + step / 2, y: H - B + 16, "text-anchor": "middle" }, p.label));
  });
  if (points.length) root.append(svg("path", { d: path.join(" "), fill: "none", stroke: "#b3261e", "stroke-width": 2 }));
  root.append(svg("text", { x: L, y: H - 4 }, `bars: ${barName} (left)`),
    svg("text", { x: W - R, y: H - 4, "text-anchor": "end" }, `line: ${lineName} (right)`));
  return root;
}
