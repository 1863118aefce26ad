// Small SVG line charts for the dashboard: our own code, no library, nothing
// fetched from elsewhere. drawLineChart(svg, times, series) redraws `svg`.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgElement(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// 1, 2, 5, 10, 20, 50 ...: the smallest such number at least `value`.
function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function shortNumber(value) {
  if (value >= 1e6) return (value / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
  if (value >= 1e3) return (value / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
  return String(Math.round(value * 100) / 100);
}

// times: unix seconds; series: [{name, color, values: [number or null], dash}]
// (dash: an SVG stroke-dasharray, so a line drawn over an equal one still shows).
// Each unbroken run of a series is one <polyline data-series=name>.
function drawLineChart(svg, times, series) {
  const width = 360, height = 110, left = 38, right = 6, top = 6, bottom = 16;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  let highest = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > highest) highest = v;
  const top_value = niceCeiling(highest);
  const first = times.length ? times[0] : 0;
  const span = Math.max(1, (times.length ? times[times.length - 1] : 0) - first);
  const x = (t) => left + ((t - first) / span) * (width - left - right);
  const y = (v) => top + (1 - v / top_value) * (height - top - bottom);

  const axis = {stroke: "#999", "stroke-width": 1};
  svg.append(svgElement("line", {x1: left, y1: y(0), x2: width - right, y2: y(0), ...axis}));
  svg.append(svgElement("line", {x1: left, y1: top, x2: left, y2: y(0), ...axis}));
  const label = {"font-size": 9, fill: "#555"};
  svg.append(svgElement("text", {x: left - 3, y: y(top_value) + 8, "text-anchor": "end", ...label},
                        shortNumber(top_value)));
  svg.append(svgElement("text", {x: left - 3, y: y(0), "text-anchor": "end", ...label}, "0"));
  const minutes = Math.round(span / 60);
  svg.append(svgElement("text", {x: left, y: height - 3, ...label},
                        minutes >= 1 ? `-${minutes} min` : `-${Math.round(span)} s`));
  svg.append(svgElement("text", {x: width - right, y: height - 3, "text-anchor": "end", ...label}, "now"));

  for (const s of series) {
    let run = [];
    const flush = () => {
      if (run.length === 1) {  // a lone sample: a dot, so it still shows
        svg.append(svgElement("circle", {cx: run[0][0], cy: run[0][1], r: 1.5, fill: s.color,
                                         "data-series": s.name}));
      } else if (run.length > 1) {
        svg.append(svgElement("polyline", {points: run.map((p) => p.join(",")).join(" "), fill: "none",
                                           stroke: s.color, "stroke-width": 1.5, "data-series": s.name,
                                           "stroke-dasharray": s.dash || "none"}));
      }
      run = [];
    };
    s.values.forEach((v, i) => {
      if (v === null) flush();
      else run.push([x(times[i]).toFixed(1), y(v).toFixed(1)]);
    });
    flush();
  }
}
