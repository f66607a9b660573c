/* Shared case notes: one Yjs document per consult, each section a Y.Text bound to a <textarea>,
 * synced over the Socket.IO namespace /notes (binary as base64).
 *
 * - Local input -> character diff (common prefix/suffix) -> delete/insert in one transaction.
 * - Remote updates -> textarea rewritten, the local caret kept with Yjs relative positions.
 * - Offline: edits stay in the document; on reconnect the state vectors are exchanged and each
 *   side sends what the other lacks, so nothing typed offline is lost. Until the server has them,
 *   unsynced edits are also kept in localStorage (like the chat outbox), so closing the tab while
 *   offline loses nothing either; the copy is removed as soon as everything is saved.
 * - The other party's name is shown on the section they edit, with their caret.
 */
// Page weight: Yjs (27 KB with Brotli, the room's largest file) is not part of the room's first
// load. The notes are shown as the server rendered them (read-only) and the editor starts once Yjs
// is loaded: after the page's "load" event, when the notes panel is near the viewport, or at once
// when the user touches or focuses it. Its URL (content-hashed) is on this script's data-yjs.
(function (start) {
  "use strict";
  var root = document.getElementById("notes");
  var script = document.currentScript;
  if (!root || !window.io) return;
  if (window.Y) { start(); return; }
  var src = script && script.dataset.yjs;
  if (!src) return;
  var requested = false, loaded = false, visible = false, observer = null;
  function load() {
    if (requested) return;
    requested = true;
    if (observer) observer.disconnect();
    var tag = document.createElement("script");
    tag.src = src;
    tag.onload = function () { loaded = true; start(); };
    tag.onerror = function () {  // a dropped link: try again a little later, or when it is back
      tag.remove(); requested = false;
      var status = root.querySelector(".notes-status");
      if (status) { status.textContent = t("The notes editor could not be loaded — retrying…"); status.className = "notes-status bad"; }
      setTimeout(load, 5000);
    };
    document.head.appendChild(tag);
  }
  function loadIfVisible() { if (visible && document.readyState === "complete") load(); }
  ["pointerdown", "focusin", "keydown"].forEach(function (type) { root.addEventListener(type, load, { once: true }); });
  if (window.IntersectionObserver) {
    observer = new IntersectionObserver(function (entries) {
      visible = entries.some(function (e) { return e.isIntersecting; });
      loadIfVisible();
    });
    observer.observe(root);
    window.addEventListener("load", loadIfVisible);
  } else {
    window.addEventListener("load", load);
  }
  window.addEventListener("online", function () { if (!loaded) loadIfVisible(); });
  window.huizhenNotesLoader = { load: load, requested: function () { return requested; } };
})(function () {
  "use strict";
  var root = document.getElementById("notes");
  if (!root || !window.Y || !window.io) return;
  var Y = window.Y;
  var ref = root.dataset.ref;
  var LOCAL = "local";
  var REMOTE = "remote";
  var doc = new Y.Doc();
  var statusEl = root.querySelector(".notes-status");

  var state = {
    canEdit: false,          // this user may edit (a party, consult open)
    readOnly: root.dataset.readOnly === "true",
    joined: false,           // joined on the current connection
    everJoined: false,
    inflight: 0,             // updates sent and not yet acknowledged
    dirty: false,            // local changes the server may not have (sent on the next sync)
    error: "",
    stopped: false,
    conn: "",                // what the connection is doing while it is down ("Server busy, retrying in 4 s")
  };
  var sections = {};
  var editors = {};          // user_id -> {name, section, cursor}
  var resyncTimer = null;
  // this user's alone: static/js/session.js removes other users' keys and clears it at sign-out
  var storeKey = "huizhen:notes:" + root.dataset.me + ":" + ref;
  var storing = true;  // false once signing out: nothing is written back
  var storeTimer = null;

  // --- binary <-> base64 -------------------------------------------------------------------
  function toB64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }
  function fromB64(text) {
    var s = atob(text);
    var bytes = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes;
  }

  // --- status line ---------------------------------------------------------------------------
  function render() {
    var text, cls;
    if (state.readOnly) {
      text = t("Signed off — the notes are read-only"); cls = "done";
    } else if (state.error && !state.joined) {
      text = state.error; cls = "bad";
    } else if (!socket.connected || !state.joined) {
      if (state.conn && !socket.connected) { text = state.conn; cls = "bad"; }
      else if (!state.everJoined) { text = t("Connecting…"); cls = "busy"; }
      else { text = state.canEdit ? t("Offline — changes will sync when the connection returns") : t("Offline"); cls = "bad"; }
    } else if (!state.canEdit) {
      text = t("Read-only: only the consult's doctors edit these notes"); cls = "done";
    } else if (state.inflight > 0 || state.dirty) {
      text = t("Saving…"); cls = "busy";
    } else if (state.error) {
      text = state.error; cls = "bad";
    } else {
      text = t("All changes saved"); cls = "ok";
    }
    statusEl.textContent = text;
    statusEl.className = "notes-status " + cls;
    root.classList.toggle("offline", state.everJoined && !state.joined);
  }

  function applyMode() {
    // Editable only once synced; shown as read-only when signed or not ours to edit.
    var locked = state.readOnly || (state.everJoined && !state.canEdit) || root.dataset.canEdit !== "true";
    Object.keys(sections).forEach(function (name) {
      var el = sections[name].el;
      el.readOnly = !state.canEdit;
      if (el.dataset.placeholder === undefined) el.dataset.placeholder = el.placeholder;
      el.placeholder = locked ? t("Nothing noted.") : el.dataset.placeholder;
    });
    root.classList.toggle("read-only", locked);
  }

  // --- index mapping through a Yjs delta (used for changes that arrived during IME input) ------
  function mapIndex(index, delta) {
    var pos = 0, out = index;
    for (var i = 0; i < delta.length; i++) {
      var op = delta[i];
      if (op.retain !== undefined) {
        pos += op.retain;
      } else if (op.insert !== undefined) {
        var n = typeof op.insert === "string" ? op.insert.length : 1;
        if (pos <= index) out += n;
      } else if (op.delete !== undefined) {
        if (pos < index) out -= Math.min(op.delete, index - pos);
        pos += op.delete;
      }
    }
    return out;
  }
  function isHigh(c) { return c >= 0xd800 && c <= 0xdbff; }
  function isLow(c) { return c >= 0xdc00 && c <= 0xdfff; }

  // --- local edits -> Y.Text -------------------------------------------------------------------
  function pushLocal(s) {
    if (!state.canEdit) return;
    var now = s.el.value, before = s.last;
    if (now === before && !s.deltas.length) return;
    var start = 0, min = Math.min(now.length, before.length);
    while (start < min && now.charCodeAt(start) === before.charCodeAt(start)) start++;
    if (start > 0 && isHigh(before.charCodeAt(start - 1))) start--;  // never split a surrogate pair
    var endB = before.length, endN = now.length;
    while (endB > start && endN > start && before.charCodeAt(endB - 1) === now.charCodeAt(endN - 1)) { endB--; endN--; }
    if (endB < before.length && isLow(before.charCodeAt(endB))) { endB++; endN++; }
    var from = start, to = endB, inserted = now.slice(start, endN);
    s.deltas.forEach(function (delta) { from = mapIndex(from, delta); to = mapIndex(to, delta); });
    var remoteMeanwhile = s.deltas.length > 0;
    s.deltas = [];
    doc.transact(function () {
      if (to > from) s.ytext.delete(from, to - from);
      if (inserted) s.ytext.insert(from, inserted);
    }, LOCAL);
    var merged = s.ytext.toString();
    if (remoteMeanwhile || merged !== now) {
      var caret = from + inserted.length;
      writeTextarea(s, merged, caret, caret, "none");
    }
    s.last = merged;
    drawCarets(s);
  }

  function writeTextarea(s, text, selStart, selEnd, direction) {
    var el = s.el, scroll = el.scrollTop;
    el.value = text;
    if (document.activeElement === el && selStart !== null) {
      el.setSelectionRange(selStart, selEnd, direction || "none");
    }
    el.scrollTop = scroll;
  }

  // --- Y.Text -> textarea (remote changes), keeping the local caret ---------------------------
  doc.on("beforeTransaction", function (tr) {
    if (tr.origin === LOCAL) return;
    Object.keys(sections).forEach(function (name) {
      var s = sections[name];
      if (document.activeElement === s.el && !s.composing && s.el.value === s.last) {
        s.saved = {
          start: Y.createRelativePositionFromTypeIndex(s.ytext, s.el.selectionStart, -1),
          end: Y.createRelativePositionFromTypeIndex(s.ytext, s.el.selectionEnd, -1),
          direction: s.el.selectionDirection,
        };
      }
    });
  });

  function onTextChange(s, event, tr) {
    if (tr.origin === LOCAL) return;
    if (s.composing) { s.deltas.push(event.delta); return; }  // applied at compositionend
    var text = s.ytext.toString();
    var a = null, b = null;
    if (s.saved) {
      var pa = Y.createAbsolutePositionFromRelativePosition(s.saved.start, doc);
      var pb = Y.createAbsolutePositionFromRelativePosition(s.saved.end, doc);
      a = pa ? pa.index : 0; b = pb ? pb.index : a;
    }
    writeTextarea(s, text, a, b, s.saved ? s.saved.direction : "none");
    s.last = text;
  }

  doc.on("afterTransaction", function (tr) {
    Object.keys(sections).forEach(function (name) {
      sections[name].saved = null;
      if (tr.origin !== LOCAL) drawCarets(sections[name]);
    });
  });

  // --- unsynced edits survive a closed tab --------------------------------------------------------
  // Only edits the server has not acknowledged are kept (and only until it has): while online
  // each keystroke is saved at once, and pagehide/beforeunload keep whatever is still in flight.
  function keepUnsynced() {
    if (storeTimer) return;
    storeTimer = setTimeout(function () {
      storeTimer = null;
      if (storing) try { localStorage.setItem(storeKey, toB64(Y.encodeStateAsUpdate(doc))); } catch (e) { /* full: memory only */ }
    }, 300);
  }
  function allSaved() {
    if (storeTimer) { clearTimeout(storeTimer); storeTimer = null; }
    try { localStorage.removeItem(storeKey); } catch (e) { /* ignore */ }
  }
  function restoreUnsynced() {
    var saved = null;
    try { saved = localStorage.getItem(storeKey); } catch (e) { saved = null; }
    if (!saved) return;
    try { Y.applyUpdate(doc, fromB64(saved), "restore"); state.dirty = true; } catch (e) { allSaved(); }
  }

  // --- sending -----------------------------------------------------------------------------------
  var socket = window.io("/notes", { transports: ["websocket", "polling"] });

  doc.on("update", function (update, origin) {
    if (origin === REMOTE) return;
    if (!state.joined || !state.canEdit || state.dirty) {
      // Offline, or an earlier update was refused: the next sync sends everything missing.
      state.dirty = true;
      keepUnsynced();
      if (state.joined) scheduleResync(700);
      render();
      return;
    }
    send(update);
  });

  function send(update) {
    state.inflight++;
    render();
    socket.timeout(15000).emit("update", { ref: ref, update: toB64(update) }, function (err, ack) {
      state.inflight--;
      if (!err && ack && ack.ok) {
        if (!state.dirty) state.error = "";
        if (!state.dirty && state.inflight === 0) allSaved();
      } else if (ack && ack.error === "read_only") {
        setReadOnly();
      } else {
        state.dirty = true;   // the document still holds it: the next sync sends it again
        keepUnsynced();
        state.error = ack && ack.message ? ack.message : t("The server did not answer; retrying…");
        scheduleResync(ack && ack.error === "rate_limited" ? 700 : 2500);
      }
      render();
    });
  }

  function scheduleResync(delay) {
    if (resyncTimer || state.stopped) return;
    resyncTimer = setTimeout(function () { resyncTimer = null; if (socket.connected) syncNow(); }, delay);
  }

  function syncNow() {
    var event = state.joined ? "sync" : "join";
    socket.timeout(20000).emit(event, { ref: ref, state_vector: toB64(Y.encodeStateVector(doc)) }, function (err, ack) {
      if (event === "join" && HuizhenLive.retryable(err, ack)) { live.later(t("Could not open the notes"), syncNow); return; }
      if (err || !ack) { scheduleResync(3000); return; }
      if (!ack.ok) {
        state.error = ack.message || t("The notes are not available.");
        if (ack.status === 404 || ack.status === 403) { state.stopped = true; } else { scheduleResync(5000); }
        render();
        return;
      }
      Y.applyUpdate(doc, fromB64(ack.update), REMOTE);
      if (event === "join") live.joined();
      state.joined = true;
      state.everJoined = true;
      state.readOnly = !!ack.read_only;
      state.canEdit = !!ack.can_edit && !ack.read_only;
      if (event === "join") {
        refreshAll();
        editors = {};
        (ack.editors || []).forEach(setEditor);
        drawAll();
        sendFocus();
      }
      applyMode();
      if (state.canEdit) {
        // What the server lacks: edits made offline, or ones it refused a moment ago.
        var mine = Y.encodeStateAsUpdate(doc, fromB64(ack.state_vector));
        state.dirty = false;
        if (mine.length > 2) send(mine);
        else { state.error = ""; if (state.inflight === 0) allSaved(); }
      } else if (state.readOnly) {
        allSaved();
      }
      render();
    });
  }

  function refreshAll() {
    Object.keys(sections).forEach(function (name) {
      var s = sections[name];
      if (s.composing) return;
      var text = s.ytext.toString();
      if (s.el.value !== text) writeTextarea(s, text, null, null);
      s.last = text;
    });
  }

  function setReadOnly() {
    allSaved();  // signed: nothing more can be saved
    state.readOnly = true;
    state.canEdit = false;
    state.dirty = false;
    state.error = "";
    editors = {};  // nobody edits signed notes
    drawAll();
    applyMode();
    render();
  }

  // Reconnect after a refused connect and retry a failed join, with backoff (static/js/live.js).
  var live = HuizhenLive.keep(socket, function (kind, text) { state.conn = text; render(); });
  socket.on("connect", function () { state.joined = false; state.error = ""; state.conn = ""; syncNow(); render(); });
  socket.on("disconnect", function () { state.joined = false; editors = {}; drawAll(); render(); });
  socket.on("connect_error", function () { render(); });
  socket.on("update", function (msg) {
    if (!msg || typeof msg.update !== "string") return;
    Y.applyUpdate(doc, fromB64(msg.update), REMOTE);
    if (doc.store.pendingStructs || doc.store.pendingDs) scheduleResync(1500);  // an update was missed
  });
  socket.on("focus", function (msg) { setEditor(msg); drawAll(); });
  socket.on("read_only", function () { setReadOnly(); });
  // An update lost between nodes (the message queue was down) leaves no gap Yjs can see when it
  // does not depend on anything missing: the periodic state-vector sync (every RESYNC_SECONDS, and
  // when the tab is shown again or the network returns) fetches whatever the server has and we lack.
  HuizhenLive.resync(function () { if (state.joined && !state.readOnly) syncNow(); }, Number(root.dataset.resyncSeconds) || 5);

  function keepNowIfUnsynced() {
    if (storing && state.canEdit && (state.dirty || state.inflight > 0)) {
      try { localStorage.setItem(storeKey, toB64(Y.encodeStateAsUpdate(doc))); } catch (err) { /* ignore */ }
      return true;
    }
    return false;
  }
  window.addEventListener("pagehide", keepNowIfUnsynced);
  document.addEventListener("huizhen:before-signout", keepNowIfUnsynced);  // counted in the warning
  document.addEventListener("huizhen:signout", function () { storing = false; });
  document.addEventListener("visibilitychange", function () { if (document.hidden) keepNowIfUnsynced(); });
  window.addEventListener("beforeunload", function (e) {
    if (keepNowIfUnsynced()) { e.preventDefault(); e.returnValue = ""; }
  });

  // --- who edits where -----------------------------------------------------------------------------
  function setEditor(msg) {
    if (!msg || msg.user_id === undefined) return;
    if (msg.section) editors[msg.user_id] = { name: msg.name, section: msg.section, cursor: msg.cursor || null };
    else delete editors[msg.user_id];
  }

  var focusTimer = null;
  function sendFocus() {
    if (focusTimer) return;
    focusTimer = setTimeout(function () {
      focusTimer = null;
      if (!state.joined || !state.canEdit) return;
      var active = null;
      Object.keys(sections).forEach(function (name) { if (document.activeElement === sections[name].el) active = sections[name]; });
      var payload = { ref: ref, section: null, cursor: null };
      if (active) {
        payload.section = active.name;
        var pos = Y.createRelativePositionFromTypeIndex(active.ytext, Math.min(active.el.selectionEnd, active.ytext.length), -1);
        payload.cursor = toB64(Y.encodeRelativePosition(pos));
      }
      socket.emit("focus", payload);
    }, 120);
  }

  function colourOf(userId) { return "c" + (Math.abs(Number(userId)) % 6); }

  // A hidden copy of the textarea's text layout, to find where a character index is drawn.
  var mirror = document.createElement("div");
  mirror.className = "notes-mirror";
  mirror.setAttribute("aria-hidden", "true");
  document.body.appendChild(mirror);
  var COPY = ["fontFamily", "fontSize", "fontWeight", "fontStyle", "letterSpacing", "lineHeight",
    "textTransform", "wordSpacing", "textIndent", "tabSize", "paddingTop", "paddingRight",
    "paddingBottom", "paddingLeft"];

  function caretAt(el, index) {
    var cs = window.getComputedStyle(el);
    COPY.forEach(function (p) { mirror.style[p] = cs[p]; });
    mirror.style.width = el.clientWidth + "px";
    mirror.textContent = el.value.slice(0, index);
    var mark = document.createElement("span");
    mark.textContent = el.value.slice(index, index + 1) || ".";
    mirror.appendChild(mark);
    var lineHeight = parseFloat(cs.lineHeight) || mark.offsetHeight;
    return {
      top: parseFloat(cs.borderTopWidth) + mark.offsetTop - el.scrollTop,
      left: parseFloat(cs.borderLeftWidth) + mark.offsetLeft - el.scrollLeft,
      height: lineHeight,
    };
  }

  function drawCarets(s) {
    var names = [];
    s.carets.textContent = "";
    Object.keys(editors).forEach(function (uid) {
      var ed = editors[uid];
      if (ed.section !== s.name) return;
      names.push({ uid: uid, name: ed.name });
      if (!ed.cursor) return;
      var index = null;
      try {
        var abs = Y.createAbsolutePositionFromRelativePosition(Y.decodeRelativePosition(fromB64(ed.cursor)), doc);
        if (abs && abs.type === s.ytext) index = abs.index;
      } catch (e) { index = null; }
      if (index === null || index > s.el.value.length) return;
      var at = caretAt(s.el, index);
      if (at.top < 0 || at.top > s.el.clientHeight) return;
      var caret = document.createElement("span");
      caret.className = "remote-caret " + colourOf(uid);
      caret.style.top = at.top + "px";
      caret.style.left = at.left + "px";
      caret.style.height = at.height + "px";
      var flag = document.createElement("span");
      flag.className = "remote-caret-name";
      flag.textContent = ed.name;
      caret.appendChild(flag);
      s.carets.appendChild(caret);
    });
    s.badge.textContent = "";
    names.forEach(function (n) {
      var badge = document.createElement("span");
      badge.className = "editor-badge " + colourOf(n.uid);
      badge.textContent = t("%(name)s is editing", { name: n.name });
      s.badge.appendChild(badge);
    });
    s.box.classList.toggle("being-edited", names.length > 0);
  }

  function drawAll() { Object.keys(sections).forEach(function (name) { drawCarets(sections[name]); }); }

  // --- bind each section's textarea ----------------------------------------------------------------
  Array.prototype.forEach.call(root.querySelectorAll("textarea[data-section]"), function (el) {
    var name = el.dataset.section;
    var box = el.closest(".notes-section");
    var s = {
      name: name, el: el, box: box, ytext: doc.getText(name), last: el.value,
      composing: false, deltas: [], saved: null,
      badge: box.querySelector(".notes-editors"), carets: box.querySelector(".notes-carets"),
    };
    sections[name] = s;
    s.ytext.observe(function (event, tr) { onTextChange(s, event, tr); });
    el.addEventListener("compositionstart", function () { s.composing = true; });
    el.addEventListener("compositionend", function () { s.composing = false; pushLocal(s); });
    el.addEventListener("input", function (e) { if (!s.composing && !e.isComposing) pushLocal(s); sendFocus(); });
    ["focus", "select", "keyup", "mouseup"].forEach(function (type) { el.addEventListener(type, sendFocus); });
    el.addEventListener("blur", sendFocus);
    el.addEventListener("scroll", function () { drawCarets(s); });
  });
  window.addEventListener("resize", drawAll);
  restoreUnsynced();
  applyMode();
  render();
  // For tests and support: the socket, the document and the sync state.
  window.huizhenNotes = {
    socket: socket, doc: doc,
    state: function () { return { joined: state.joined, dirty: state.dirty, inflight: state.inflight, canEdit: state.canEdit, readOnly: state.readOnly }; },
  };
});
