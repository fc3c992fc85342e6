// Chronicle explorer: small enhancements; every page works without them. Served from /explorer/static
// (the Content-Security-Policy allows no inline script), and it never inserts HTML: text only.
"use strict";

// Time travel: the version slider shows its value as it moves and goes there when released.
document.querySelectorAll("form[data-autosubmit] input[type=range]").forEach(function (slider) {
  var out = document.getElementById(slider.id + "-out");
  slider.addEventListener("input", function () { if (out) { out.textContent = slider.value; } });
  slider.addEventListener("change", function () { slider.form.submit(); });
});

// Keyboard: "[" and "]" step to the previous and next version of a stream.
document.addEventListener("keydown", function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey) { return; }
  var tag = (e.target && e.target.tagName) || "";
  if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") { return; }
  var rel = e.key === "[" ? "prev" : e.key === "]" ? "next" : null;
  var link = rel && document.querySelector(".steps a[rel=" + rel + "]");
  if (link) { window.location.assign(link.href); }
});

// Integrity: while a verify run goes, show how long it has taken, and reload once it is done.
document.querySelectorAll("[data-progress-url]").forEach(function (box) {
  var elapsed = box.querySelector("[data-elapsed]");
  function poll() {
    fetch(box.getAttribute("data-progress-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (p) {
        if (!p.running) { window.location.reload(); return; }
        if (elapsed) { elapsed.textContent = p.elapsed_s.toFixed(1) + " s"; }
        window.setTimeout(poll, 500);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  poll();
});

// A link to an event on a stream page (#v3) opens that event.
if (window.location.hash) {
  var target = document.getElementById(window.location.hash.slice(1));
  if (target && target.tagName === "DETAILS") { target.open = true; }
}
