// The console's only script: copy buttons, and the usage chart drawn from the JSON endpoint.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  });

  var SVG = "http://www.w3.org/2000/svg";

  function element(name, attributes, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(container, days) {
    var width = 900, height = 220, left = 48, bottom = 24, top = 10;
    var plotHeight = height - bottom - top;
    var most = Math.max(1, Math.max.apply(null, days.map(function (d) { return d.api_calls; })));
    var slot = (width - left) / days.length;
    var svg = element("svg", { viewBox: "0 0 " + width + " " + height, role: "img" });
    svg.appendChild(element("text", { x: 0, y: top + 10, "font-size": 11, fill: "#6b7280" }, String(most)));
    svg.appendChild(element("text", { x: 0, y: top + plotHeight, "font-size": 11, fill: "#6b7280" }, "0"));
    days.forEach(function (day, index) {
      var x = left + index * slot;
      var callsHeight = plotHeight * day.api_calls / most;
      var searchHeight = plotHeight * day.searches / most;
      var calls = element("rect", {
        class: "calls", x: x + 1, width: Math.max(1, slot * 0.45),
        y: top + plotHeight - callsHeight, height: callsHeight,
        "data-day": day.day, "data-api-calls": day.api_calls
      });
      calls.appendChild(element("title", {}, day.day + ": " + day.api_calls + " API calls"));
      svg.appendChild(calls);
      var searches = element("rect", {
        class: "searches", x: x + 1 + slot * 0.45, width: Math.max(1, slot * 0.45),
        y: top + plotHeight - searchHeight, height: searchHeight
      });
      searches.appendChild(element("title", {}, day.day + ": " + day.searches + " searches"));
      svg.appendChild(searches);
      if (index % 5 === 0 || index === days.length - 1) {
        svg.appendChild(element("text", {
          x: x, y: height - 6, "font-size": 10, fill: "#6b7280"
        }, day.day.slice(5)));
      }
    });
    container.textContent = "";
    container.appendChild(svg);
    container.setAttribute("data-total-calls", days.reduce(function (sum, d) { return sum + d.api_calls; }, 0));
  }

  var chart = document.getElementById("usage-chart");
  if (chart) {
    fetch(chart.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (body) { drawChart(chart, body.days); })
      .catch(function () { chart.textContent = "The chart could not be loaded."; });
  }
})();
