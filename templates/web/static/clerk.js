// Enhancements of the clerks' pages; every page works without this file.
// 1. Drop zones: files dropped on [data-dropzone] go into its <input type=file>.
// 2. The receipts matrix: [data-live-url] is polled and the cells are updated in place.
"use strict";

(function () {
  function dropzones() {
    document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
      var input = zone.querySelector("input[type=file]");
      var list = zone.querySelector("[data-dropzone-list]");
      if (!input) { return; }
      function show() {
        if (!list) { return; }
        var names = Array.prototype.map.call(input.files, function (f) { return f.name; });
        list.textContent = names.join(", ");
      }
      input.addEventListener("change", show);
      ["dragenter", "dragover"].forEach(function (type) {
        zone.addEventListener(type, function (event) {
          event.preventDefault();
          zone.classList.add("over");
        });
      });
      ["dragleave", "drop"].forEach(function (type) {
        zone.addEventListener(type, function (event) {
          event.preventDefault();
          zone.classList.remove("over");
        });
      });
      zone.addEventListener("drop", function (event) {
        if (event.dataTransfer && event.dataTransfer.files.length) {
          input.files = event.dataTransfer.files;
          show();
        }
      });
    });
  }

  function liveMatrix() {
    var status = document.querySelector("[data-live-url]");
    if (!status) { return; }
    var url = status.getAttribute("data-live-url");
    var seconds = parseInt(status.getAttribute("data-live-seconds"), 10) || 5;
    var table = document.getElementById("matrix");
    var counts = document.getElementById("counts");

    function update(data) {
      var known = table ? table.querySelectorAll("tbody tr[data-address]").length : 0;
      if (data.rows.length !== known) { window.location.reload(); return; }
      data.rows.forEach(function (row) {
        var tr = table.querySelector('tr[data-address="' + CSS.escape(row.address) + '"]');
        if (!tr) { return; }
        Object.keys(row.cells).forEach(function (key) {
          var td = tr.querySelector('td[data-cell="' + CSS.escape(key) + '"]');
          if (!td) { return; }
          var state = row.cells[key][0], label = row.cells[key][1];
          var span = td.querySelector(".state");
          if (span && span.textContent !== label) {
            span.className = "state state-" + state;
            span.textContent = label;
          }
        });
      });
      if (counts) {
        counts.textContent = "";
        Object.keys(data.counts).forEach(function (state) {
          var li = document.createElement("li");
          var span = document.createElement("span");
          span.className = "state state-" + state;
          span.textContent = data.labels[state] + ": " + data.counts[state];
          li.appendChild(span);
          counts.appendChild(li);
        });
      }
      status.textContent = status.textContent.replace(/\d{1,2}:\d{2}:\d{2}/, new Date().toLocaleTimeString("pl-PL"));
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) { if (data) { update(data); } })
        .catch(function () { /* try again at the next tick */ })
        .finally(function () { window.setTimeout(poll, seconds * 1000); });
    }
    window.setTimeout(poll, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    dropzones();
    liveMatrix();
  });
})();
