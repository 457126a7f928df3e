// qsign web pages: live request state from the event stream, and seal placement by tapping a page.
// Every page works without this file; it only adds live updates and tap-to-place.
"use strict";

(function () {
  var STORED = ["waiting_for_review", "approved", "rejected", "signing", "signed", "failed", "cancelled", "expired"];
  var FINAL = ["signed", "rejected", "cancelled", "expired"];

  function followState(live) {
    var url = live.getAttribute("data-events-url");
    var pageState = live.getAttribute("data-state");
    var pageUpdated = Date.parse(live.getAttribute("data-updated"));
    var label = document.getElementById("live-state");
    var labels = {};
    live.querySelectorAll(".labels li").forEach(function (item) {
      labels[item.getAttribute("data-state")] = item.textContent;
    });
    if (!window.EventSource || FINAL.indexOf(pageState) >= 0) {
      return;
    }
    var source = new EventSource(url);
    source.addEventListener("state", function (message) {
      var event = JSON.parse(message.data);
      // The stream first replays earlier events; those older than the state this page shows are skipped.
      if (Date.parse(event.time) < pageUpdated) {
        return;
      }
      label.textContent = labels[event.state] || event.state;
      label.className = "state state-" + event.state;
      live.setAttribute("data-live", event.state);
      if (event.state === "signed") {
        document.getElementById("download").hidden = false;
      }
      if (FINAL.indexOf(event.state) >= 0) {
        source.close();
      }
      // A new stored state changes which forms the page offers, so the page is loaded again.
      if (event.state !== pageState && STORED.indexOf(event.state) >= 0 && event.state !== "signing") {
        source.close();
        window.setTimeout(function () { window.location.reload(); }, 600);
      }
    });
  }

  function placeSeal(placer) {
    var image = placer.querySelector("img");
    var marker = document.getElementById("seal-marker");
    var pageWidth = parseFloat(placer.getAttribute("data-page-width"));
    var pageHeight = parseFloat(placer.getAttribute("data-page-height"));
    var fields = ["x1", "y1", "x2", "y2"].map(function (id) { return document.getElementById(id); });

    function rect() {
      return fields.map(function (field) { return parseFloat(field.value); });
    }

    function showMarker() {
      var r = rect();
      if (r.some(isNaN) || !image.clientWidth) {
        marker.hidden = true;
        return;
      }
      var scale = image.clientWidth / pageWidth;
      marker.style.left = (image.clientLeft + r[0] * scale) + "px";
      marker.style.top = (image.clientTop + (pageHeight - r[3]) * scale) + "px";
      marker.style.width = ((r[2] - r[0]) * scale) + "px";
      marker.style.height = ((r[3] - r[1]) * scale) + "px";
      marker.hidden = false;
    }

    image.addEventListener("click", function (event) {
      var r = rect();
      var width = isNaN(r[2] - r[0]) || r[2] <= r[0] ? 150 : r[2] - r[0];
      var height = isNaN(r[3] - r[1]) || r[3] <= r[1] ? 75 : r[3] - r[1];
      // Measure from the picture itself, inside the image's border.
      var box = image.getBoundingClientRect();
      var left = box.left + image.clientLeft;
      var top = box.top + image.clientTop;
      var centreX = (event.clientX - left) / image.clientWidth * pageWidth;
      var centreY = (1 - (event.clientY - top) / image.clientHeight) * pageHeight;
      var x1 = Math.min(Math.max(centreX - width / 2, 0), pageWidth - width);
      var y1 = Math.min(Math.max(centreY - height / 2, 0), pageHeight - height);
      var values = [x1, y1, x1 + width, y1 + height];
      fields.forEach(function (field, index) { field.value = values[index].toFixed(1); });
      showMarker();
    });
    fields.forEach(function (field) { field.addEventListener("input", showMarker); });
    if (image.complete) { showMarker(); } else { image.addEventListener("load", showMarker); }
    window.addEventListener("resize", showMarker);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) { followState(live); }
    var placer = document.getElementById("placer");
    if (placer) { placeSeal(placer); }
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type=submit]").forEach(function (button) {
          window.setTimeout(function () { button.disabled = true; }, 0);
        });
      });
    });
  });
})();
