// mapchaos report: tooltips for anything with data-tip, zoom and pan for
// key timelines (wheel or buttons zoom, drag pans, double-click resets).
(function () {
  "use strict";
  var tip = document.getElementById("tooltip");
  function show(el, e) {
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
    move(e);
  }
  function move(e) {
    tip.style.left = Math.min(e.pageX + 14, window.scrollX + window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = (e.pageY + 16) + "px";
  }
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (el) { show(el, e); } else { tip.hidden = true; }
  });
  document.addEventListener("mousemove", function (e) { if (!tip.hidden) { move(e); } });
  function layout(svg, v0, v1) {
    var x0 = +svg.dataset.x0, w = +svg.dataset.w;
    var x = function (t) { return x0 + (t - v0) / (v1 - v0) * w; };
    svg.dataset.v0 = v0; svg.dataset.v1 = v1;
    svg.querySelectorAll("[data-call]").forEach(function (g) {
      var call = +g.dataset.call;
      var ret = g.dataset.ret === "" ? v1 : +g.dataset.ret;
      var a = x(call), width = Math.max(x(ret) - a, g.classList.contains("scan-window") ? 1 : 2);
      var rects = g.tagName === "rect" ? [g] : g.querySelectorAll("rect");
      rects.forEach(function (r) { r.setAttribute("x", a.toFixed(1)); r.setAttribute("width", width.toFixed(1)); });
      var visible = Math.min(a + width, x0 + w) - Math.max(a, x0);
      var fits = function (s) { return s !== "" && visible >= s.length * 6.3 + 6; };
      var first = true, shown = false;
      (g.querySelectorAll ? g.querySelectorAll("text") : []).forEach(function (text) {
        var full = text.dataset.full, short = text.dataset.short;
        // The second line (the result) only under a shown first line.
        text.textContent = (first || shown) && fits(full) ? full : (first && fits(short) ? short : "");
        if (first) { shown = text.textContent !== ""; }
        first = false;
        text.setAttribute("x", (Math.max(a, x0) + 4).toFixed(1));
      });
    });
    var last = -Infinity;
    svg.querySelectorAll("g.tickmark").forEach(function (g) {
      var px = x(+g.dataset.pos);
      var inside = px >= x0 && px <= x0 + w;
      g.style.display = inside ? "" : "none";
      g.querySelectorAll("line, text").forEach(function (el) {
        if (el.tagName === "line") { el.setAttribute("x1", px.toFixed(1)); el.setAttribute("x2", px.toFixed(1)); }
        else { el.setAttribute("x", px.toFixed(1)); }
      });
      var shown = inside && px - last >= 64;
      if (shown) { last = px; }
      g.classList.toggle("thin", !shown);
    });
  }
  document.querySelectorAll("svg.timeline").forEach(function (svg) {
    var home = [+svg.dataset.t0, +svg.dataset.t1];
    var view = home.slice();
    function zoom(factor, at) {
      var span = (view[1] - view[0]) * factor;
      if (span < 0.5) { return; }
      var frac = (at - view[0]) / (view[1] - view[0]);
      view = [at - frac * span, at - frac * span + span];
      layout(svg, view[0], view[1]);
    }
    function timeAt(clientX) {
      var box = svg.getBoundingClientRect(), scale = box.width / svg.viewBox.baseVal.width;
      var px = (clientX - box.left) / scale;
      return view[0] + (px - +svg.dataset.x0) / +svg.dataset.w * (view[1] - view[0]);
    }
    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      zoom(e.deltaY < 0 ? 0.8 : 1.25, timeAt(e.clientX));
    }, { passive: false });
    var drag = null;
    svg.addEventListener("mousedown", function (e) { drag = { at: timeAt(e.clientX), view: view.slice() }; });
    window.addEventListener("mouseup", function () { drag = null; });
    svg.addEventListener("mousemove", function (e) {
      if (!drag || !(e.buttons & 1)) { return; }
      var shift = drag.at - timeAt(e.clientX);
      view = [view[0] + shift, view[1] + shift];
      layout(svg, view[0], view[1]);
    });
    svg.addEventListener("dblclick", function () { view = home.slice(); layout(svg, view[0], view[1]); });
    var controls = document.querySelector('[data-zoom-for="' + svg.id + '"]');
    if (controls) {
      controls.querySelectorAll("button").forEach(function (b) {
        b.addEventListener("click", function () {
          var mid = (view[0] + view[1]) / 2;
          if (b.dataset.zoom === "in") { zoom(0.5, mid); }
          else if (b.dataset.zoom === "out") { zoom(2, mid); }
          else if (b.dataset.zoom === "all") { view = [+svg.dataset.a0, +svg.dataset.a1]; layout(svg, view[0], view[1]); }
          else { view = home.slice(); layout(svg, view[0], view[1]); }
        });
      });
    }
    layout(svg, view[0], view[1]);
  });
})();
