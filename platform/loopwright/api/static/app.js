// Loopwright pages: CSRF on every htmx request, errors shown in the alert area, and the
// runs list's "new runs" banner. No polling: live updates come over one EventSource.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  document.body.addEventListener("htmx:configRequest", function (evt) {
    if (meta) { evt.detail.headers["X-CSRF-Token"] = meta.content; }
  });
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "[45]..", swap: true, error: true, target: "#flash" }
  ];
  var banner = document.getElementById("new-runs");
  if (banner && window.EventSource) {
    var count = 0;
    var skill = banner.getAttribute("data-skill");
    var source = new EventSource(banner.getAttribute("data-stream"));
    source.addEventListener("runs", function (msg) {
      var data = JSON.parse(msg.data);
      if (data.kind !== "created" || (skill && data.skill !== skill)) { return; }
      count += 1;
      banner.querySelector(".count").textContent = String(count);
      banner.hidden = false;
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
})();
