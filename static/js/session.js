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

  // What would be lost, in the page's language: each part one phrase with its numbers as
  // parameters (singular and plural are separate msgids), the parts joined by one more msgid.
  function warning(found) {
    var lost = [];
    if (found.messages) {
      if (found.rooms > 1) {
        lost.push(t("%(n)s chat messages not sent yet (in %(rooms)s consults)", { n: found.messages, rooms: found.rooms }));
      } else {
        lost.push(found.messages === 1 ? t("1 chat message not sent yet")
                                       : t("%(n)s chat messages not sent yet", { n: found.messages }));
      }
    }
    if (found.notes) {
      lost.push(found.notes === 1 ? t("case notes not saved yet in 1 consult")
                                  : t("case notes not saved yet in %(n)s consults", { n: found.notes }));
    }
    // Translators: the two things not sent or saved yet (chat messages, case notes)
    var what = lost.length > 1 ? t("%(first)s and %(second)s", { first: lost[0], second: lost[1] }) : lost[0];
    return t("You have %(what)s. They are kept only in this browser and will be deleted from it when you " +
             "sign out, so nobody else using this computer can read them.\n\nSign out anyway? (Cancel to " +
             "stay and let them be sent, or copy them first.)", { what: what });
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
