// Sandhive dashboard: the sandbox page's charts (uPlot over /metrics.json) and terminal (xterm.js over a
// WebSocket). Everything else is htmx attributes in the server's HTML. No inline scripts (the CSP forbids them).
(function () {
  "use strict";

  function charts() {
    var section = document.getElementById("charts");
    if (!section || typeof uPlot === "undefined") return;
    var plots = {};
    var mib = 1024 * 1024;
    function series(samples, field) {
      return samples.map(function (s) {
        if (field === "cpu") return s.cpuUsedPct;
        if (field === "mem") return s.memUsed / mib;
        return s.diskUsed / mib;
      });
    }
    function draw(samples) {
      var xs = samples.map(function (s) { return s.timestampUnix; });
      section.querySelectorAll(".chart").forEach(function (el) {
        var data = [xs, series(samples, el.dataset.field)];
        el.dataset.points = String(xs.length);
        var width = Math.max(240, el.clientWidth || 320);
        if (!plots[el.id]) {
          plots[el.id] = new uPlot({
            title: el.dataset.title, width: width, height: 160,
            series: [{}, {label: el.dataset.title, stroke: "#2a6fdb", fill: "rgba(42,111,219,0.1)"}],
            // At least a minute wide: one or two samples would otherwise stretch the axis over years.
            scales: {x: {time: true, range: function (u, min, max) { return [Math.min(min, max - 60), max]; }}},
          }, data, el);
        } else {
          plots[el.id].setData(data);
        }
      });
    }
    function poll() {
      fetch(section.dataset.metrics, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(draw)
        .catch(function () {});
    }
    poll();
    setInterval(poll, 3000);
    window.addEventListener("resize", function () {
      section.querySelectorAll(".chart").forEach(function (el) {
        if (plots[el.id]) plots[el.id].setSize({width: Math.max(240, el.clientWidth), height: 160});
      });
    });
  }

  function terminal() {
    var el = document.getElementById("terminal");
    if (!el || typeof Terminal === "undefined") return;
    var term = new Terminal({convertEol: false, cursorBlink: true, fontSize: 13});
    var fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + el.dataset.socket + "?csrf=" + encodeURIComponent(el.dataset.csrf) +
      "&cols=" + term.cols + "&rows=" + term.rows;
    var socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    el.dataset.state = "connecting";
    socket.onopen = function () { el.dataset.state = "open"; };
    socket.onclose = function () { el.dataset.state = "closed"; term.write("\r\n[terminal closed]\r\n"); };
    socket.onmessage = function (event) { term.write(new Uint8Array(event.data)); };
    term.onData(function (data) {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({type: "input", data: data}));
    });
    el.dataset.cols = String(term.cols);
    term.onResize(function (size) {
      el.dataset.cols = String(size.cols);
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({type: "resize", cols: size.cols, rows: size.rows}));
      }
    });
    window.addEventListener("resize", function () { fit.fit(); });
  }

  charts();
  terminal();
})();
