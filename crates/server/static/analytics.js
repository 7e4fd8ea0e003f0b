// Live dashboard: the server pushes the page's panels (HTML it rendered and escaped) over
// Server-Sent Events whenever they change; without JavaScript the page still reads, and
// reloading it shows the same figures.
(function () {
  "use strict";
  var panels = document.getElementById("panels");
  var status = document.getElementById("live-status");
  var url = panels && panels.getAttribute("data-live");
  if (!url || !window.EventSource) return;
  var source = new EventSource(url);
  source.addEventListener("open", function () {
    if (status) status.textContent = "Live";
  });
  source.addEventListener("error", function () {
    if (status) status.textContent = "Reconnecting…";
  });
  source.addEventListener("panels", function (e) {
    panels.innerHTML = e.data;
    if (status) status.textContent = "Live · updated " + new Date().toLocaleTimeString();
  });
})();
