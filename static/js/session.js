/* What this browser keeps for a signed-in user (the chat outbox, unsynced case notes) is that
   user's alone, on a clinic PC that several doctors share:
   - every page removes the stored keys of anyone but the signed-in user (all of them when nobody
     is signed in: the login page after an idle sign-out, where no script ran at sign-out);
   - signing out says what would be lost (messages not sent yet, notes not saved yet), asks,
     then clears this user's keys before the form is submitted.
   Keys: "huizhen:<kind>:<user id>:<consult ref>" (older "huizhen-…" keys have no known owner). */
(function () {
  "use strict";
  var form = document.getElementById("signout-form");
  var me = form ? form.dataset.userId : "";

  function storage() {
    try { return window.localStorage; } catch (e) { return null; }  // blocked storage: nothing kept
  }
  function keys(store) {
    var all = [];
    for (var i = 0; i < store.length; i++) {
      var k = store.key(i);
      if (k && k.indexOf("huizhen") === 0) all.push(k);
    }
    return all;
  }
  function ownerOf(key) {
    var parts = key.split(":");
    return parts.length >= 4 && parts[0] === "huizhen" ? parts[2] : null;
  }

  function clear(which) {
    var store = storage();
    if (!store) return;
    keys(store).forEach(function (k) { if (which(k)) store.removeItem(k); });
  }

  // Not this user's: gone before any other script of the page can read it.
  clear(function (k) { return !me || ownerOf(k) !== me; });

  function unsent() {
    var store = storage(), found = { messages: 0, rooms: 0, notes: 0 };
    if (!store || !me) return found;
    keys(store).forEach(function (k) {
      if (ownerOf(k) !== me) return;
      var kind = k.split(":")[1];
      if (kind === "outbox") {
        var n = 0;
        try { n = (JSON.parse(store.getItem(k)) || {}).items.length || 0; } catch (e) { n = 0; }
        if (n) { found.messages += n; found.rooms += 1; }
      } else if (kind === "notes" && store.getItem(k)) {
        found.notes += 1;
      }
    });
    return found;
  }

  function warning(found) {
    var lost = [];
    if (found.messages) {
      lost.push(found.messages + (found.messages === 1 ? " chat message" : " chat messages") + " not sent yet" +
                (found.rooms > 1 ? " (in " + found.rooms + " consults)" : ""));
    }
    if (found.notes) {
      lost.push("case notes not saved yet in " + found.notes + (found.notes === 1 ? " consult" : " consults"));
    }
    return "You have " + lost.join(" and ") + ". They are kept only in this browser and will be " +
      "deleted from it when you sign out, so nobody else using this computer can read them.\n\n" +
      "Sign out anyway? (Cancel to stay and let them be sent, or copy them first.)";
  }

  if (form) {
    form.addEventListener("submit", function (e) {
      // the pages write what they still hold (notes typed a moment ago) before we look
      document.dispatchEvent(new CustomEvent("huizhen:before-signout"));
      var found = unsent();
      if ((found.messages || found.notes) && !window.confirm(warning(found))) {
        e.preventDefault();
        return;
      }
      document.dispatchEvent(new CustomEvent("huizhen:signout"));  // the pages stop storing
      clear(function () { return true; });  // after sign-out nobody is signed in here
    });
  }
  window.huizhenSession = { unsent: unsent };
})();
