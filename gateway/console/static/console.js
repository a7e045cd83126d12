// Draws the console's time series with uPlot: each element with data-chart holds its data as JSON.
(function () {
  "use strict";
  var palette = ["#2456c8", "#15803d", "#b45309", "#7c3aed", "#b91c1c", "#0e7490", "#6b7280"];

  function lines(el, data) {
    var names = Object.keys(data.lines);
    var series = [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: palette[i % palette.length], width: 2 };
    }));
    return new uPlot({ title: el.dataset.title, width: el.clientWidth - 10, height: 220, series: series,
      axes: [{}, { size: 70 }] },
      [data.x].concat(names.map(function (n) { return data.lines[n]; })), el);
  }

  function burn(el, data) {
    var series = [{}, { label: "tokens used", stroke: palette[0], width: 2 },
      { label: "limit", stroke: palette[4], dash: [6, 4], width: 1 }];
    return new uPlot({ title: el.dataset.title, width: el.clientWidth - 10, height: 160, series: series,
      axes: [{}, { size: 80 }] },
      [data.x, data.used, data.limit], el);
  }

  function draw(root) {
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var source = el.querySelector("script[type='application/json']");
      if (!source || typeof uPlot === "undefined") return;
      var data = JSON.parse(source.textContent);
      (el.dataset.chart === "burn" ? burn : lines)(el, data);
      el.dataset.drawn = "1";
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (e) { draw(e.target); });
})();
