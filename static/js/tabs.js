/* Accessible tabs (WAI-ARIA tabs pattern) for a container marked data-tabs: its [role=tablist]
   holds buttons with role="tab" and aria-controls naming a panel. Tabs are used only while the
   tab list is displayed (the CSS shows it on narrow screens); otherwise every panel shows and the
   panels carry no tab roles. Arrow keys, Home and End move between tabs and select them. */
(function () {
  "use strict";
  document.querySelectorAll("[data-tabs]").forEach(function (box) {
    var list = box.querySelector("[role=tablist]");
    if (!list) return;
    var tabs = Array.prototype.slice.call(list.querySelectorAll("[role=tab]"));
    var panel = function (tab) { return document.getElementById(tab.getAttribute("aria-controls")); };

    function select(tab, focus) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        panel(t).classList.toggle("tab-off", !on);
      });
      if (focus) tab.focus();
      box.dispatchEvent(new CustomEvent("tabchange", { detail: { panel: panel(tab) } }));
    }
    function current() { return tabs.filter(function (t) { return t.getAttribute("aria-selected") === "true"; })[0] || tabs[0]; }

    // Tab roles on the panels only while the tab list is in use (it is hidden on wide screens).
    function sync() {
      var used = getComputedStyle(list).display !== "none";
      tabs.forEach(function (t) {
        var p = panel(t);
        if (used) { p.setAttribute("role", "tabpanel"); p.setAttribute("aria-labelledby", t.id); }
        else { p.removeAttribute("role"); p.removeAttribute("aria-labelledby"); }
      });
    }

    tabs.forEach(function (tab) {
      tab.addEventListener("click", function () { select(tab, false); });
      tab.addEventListener("keydown", function (e) {
        var i = tabs.indexOf(tab), next = null;
        if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
        else if (e.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
        else if (e.key === "Home") next = tabs[0];
        else if (e.key === "End") next = tabs[tabs.length - 1];
        if (!next) return;
        e.preventDefault();
        select(next, true);
      });
    });
    select(current(), false);
    box.classList.add("tabs-ready");
    sync();
    window.addEventListener("resize", sync);
  });
})();
