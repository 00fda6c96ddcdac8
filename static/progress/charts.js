/* Draw every plotly chart of the page: a div.chart[data-figure] names the
   json_script element holding its figure ({data, layout}). plotly.js comes
   from /progress/plotly.min.js (the installed package, no CDN). */
(function () {
  "use strict";
  function drawAll() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("div.chart[data-figure]").forEach(function (div) {
      if (div.dataset.drawn) { return; }
      var source = document.getElementById(div.dataset.figure);
      if (!source) { return; }
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(div, fig.data, fig.layout, {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"]
      }).then(function () { div.dataset.drawn = "1"; });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
  window.addEventListener("load", drawAll);
})();
