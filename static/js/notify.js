/* The bell: the unread count in the header and the tab title, kept live over Socket.IO (/notify,
   this user's room), and a system notification when the user allowed them (a button asks).
   Loads the Socket.IO client itself unless the page already has it. */
(function () {
  "use strict";
  var bell = document.getElementById("notify-bell");
  if (!bell) return;
  var badge = document.getElementById("notify-count");
  var baseTitle = document.title.replace(/^[(（]\d+[)）] ?/, "");

  function show(count) {
    count = Math.max(0, parseInt(count, 10) || 0);
    bell.dataset.unread = String(count);
    badge.textContent = String(count);
    badge.hidden = count === 0;
    bell.setAttribute("aria-label", t("Notifications: %(n)s unread", { n: count }));
    // Translators: the tab's title with the unread count before it
    document.title = count ? t("(%(n)s) %(title)s", { n: count, title: baseTitle }) : baseTitle;
  }

  function addToList(n) {
    var list = document.getElementById("notification-list");
    if (!list || list.querySelector('[data-id="' + n.id + '"]')) return;
    var li = document.createElement("li");
    li.className = "notification unread" + (n.urgent ? " urgent" : "");
    li.dataset.id = String(n.id);
    var a = document.createElement("a");
    a.href = n.link;
    a.className = "notification-link";
    a.textContent = n.title;
    li.appendChild(a);
    list.insertBefore(li, list.firstChild);
  }

  // A new notification also appears for a while at the corner of the page: one click opens it.
  function toast(n) {
    var box = document.getElementById("notify-toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "notify-toast";
      box.className = "notify-toast";
      box.setAttribute("role", "status");
      document.body.appendChild(box);
    }
    var item = document.createElement("div");
    item.className = "notify-toast-item" + (n.urgent ? " urgent" : "");
    var a = document.createElement("a");
    a.href = n.link;
    a.textContent = n.title;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "linkish";
    close.textContent = "×";
    close.setAttribute("aria-label", t("Dismiss"));
    close.addEventListener("click", function () { item.remove(); });
    item.appendChild(a);
    item.appendChild(close);
    box.appendChild(item);
    if (!n.urgent) setTimeout(function () { item.remove(); }, 20000);
  }

  function systemNotice(n) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      var shown = new Notification(t("Huizhen"), { body: n.title, tag: "huizhen-" + n.id });
      shown.onclick = function () { window.focus(); window.location.href = n.link; };
    } catch (e) { /* some browsers only allow it from a service worker: the bell still counts */ }
  }

  function offerPermission() {
    if (!("Notification" in window) || Notification.permission !== "default") return;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "linkish bell-allow";
    button.id = "notify-allow";
    button.textContent = t("Allow alerts");
    button.title = t("Show a system notification when something needs you");
    button.addEventListener("click", function () {
      Notification.requestPermission().then(function () { button.remove(); });
    });
    bell.insertAdjacentElement("afterend", button);
  }

  function connect() {
    var socket = window.io("/notify", { transports: ["websocket", "polling"] });
    socket.on("connect", function () {
      socket.emit("count", {}, function (ack) { if (ack && ack.ok) show(ack.unread); });
    });
    socket.on("notification", function (data) {
      show(data.unread);
      addToList(data.notification);
      toast(data.notification);
      systemNotice(data.notification);
    });
    socket.on("unread", function (data) { show(data.unread); });
    window.huizhenNotify = socket;
  }

  show(bell.dataset.unread);
  offerPermission();
  if (window.io) {
    connect();
  } else {
    var script = document.createElement("script");
    script.src = bell.dataset.socketio;
    script.onload = connect;
    document.head.appendChild(script);
  }
})();
