/* Huizhen video call: peer-to-peer WebRTC between a consult's call participants, signaled through
   the /call Socket.IO namespace with trickle ICE and "perfect negotiation". Two people talk over
   one RTCPeerConnection; three or more over a full mesh: one connection per other person (keyed
   by user id), each pair negotiating on its own (who is polite is decided per pair by the server,
   every signal names its target). ICE servers (STUN/TURN with short-lived credentials) come from
   Huizhen. Each connection restarts ICE when the network drops and is rebuilt when its peer
   reloads; the call can fall back to audio only, and reports setup time, relay use and quality.
   It adapts by itself (static/js/adapt.js): audio only while the link is weak, video again once
   it has recovered for a while; video senders are capped for rural links, Opus sends in-band
   FEC and DTX, and each side shows what the other receives. A receive-only participant (a
   trainee) joins with no camera or microphone; the lead may let them speak (audio). */
(function () {
  "use strict";
  var root = document.getElementById("call");
  if (!root) return;
  var ref = root.dataset.ref;
  var forceRelay = root.dataset.forceRelay === "true";
  var me = parseInt(root.dataset.me || "0", 10);
  var sends = root.dataset.sends !== "false";  // false: a receive-only trainee (until allowed to speak)
  var el = function (id) { return document.getElementById(id); };
  var localVideo = el("call-local"), remoteVideo = el("call-remote"), remotesEl = el("call-remotes");
  var statusEl = el("call-status"), peerStateEl = el("call-peer-state"), qualityEl = el("call-quality");
  var joinBtn = el("call-join"), leaveBtn = el("call-leave"), muteBtn = el("call-mute"), camBtn = el("call-camera");
  var audioOnlyBtn = el("call-audio-only"), screenBtn = el("call-screen");
  var camSelect = el("call-camera-select"), micSelect = el("call-mic-select"), unmuteBtn = el("call-unmute");
  var handBtn = el("call-hand"), handsEl = el("call-hands");

  var socket = io("/call", { transports: ["websocket", "polling"], reconnectionDelayMax: 4000 });
  // peers: user id -> Peer (its connection, negotiation flags, tile). spare: a connection made
  // before anyone else is there, bound to whoever joins next (it answers their offer at once).
  var peers = {}, spare = null, pending = null;
  var iceServers = JSON.parse(root.dataset.iceServers || "[]"), localStream = null, screenTrack = null, inCall = false, joined = false;
  var state = { muted: false, camera: true, audio_only: false, screen: false, auto_audio: false };
  var settings = JSON.parse(root.dataset.settings || "{}");
  var adaptOn = !settings.adapt || settings.adapt.enabled !== false;
  var adapt = null, forced = null;  // adapt.js is fetched when joining (loadAdapt)
  var adaptTimer = null, switching = Promise.resolve(), lastSample = null, lastRecv = null, peerAuto = false;
  var theirViewEl = el("call-their-view");
  var metrics = { joinClickedAt: null, firstRemoteFrameMs: null, connectedMs: null, relayed: null, marks: {}, firstFrames: {} };
  metrics.at = {};  // wall-clock milestones (ms since the epoch), comparable between the pages
  var marked = {};  // milestone name -> callbacks waiting for it (huizhenCall.when)
  function mark(name) {
    metrics.at[name] = performance.timeOrigin + performance.now();
    if (metrics.joinClickedAt !== null) metrics.marks[name] = Math.round(performance.now() - metrics.joinClickedAt);
    (marked[name] || []).splice(0).forEach(function (resolve) { resolve(metrics.marks[name]); });
  }
  // A promise of the next time a milestone is passed (ms after the last click).
  function next(name) { return new Promise(function (resolve) { (marked[name] = marked[name] || []).push(resolve); }); }
  // A promise of a milestone of the join clicked last (ms after the click), e.g. "joined" or
  // "first_frame": resolved at once if it has passed, else when it happens (the benchmark waits on
  // the page's call state this way, with no polling and whatever the page's language).
  function when(name) {
    return new Promise(function (resolve) {
      if (metrics.joinClickedAt !== null && metrics.marks[name] !== undefined) resolve(metrics.marks[name]);
      else (marked[name] = marked[name] || []).push(resolve);
    });
  }
  var statsTimer = null, reportTimer = null, lastBytes = null, lastStatsAt = null;
  function peerList() { return Object.keys(peers).map(function (k) { return peers[k]; }); }
  // The connection the two-party page (and its tests) speak of: the peer in the first tile.
  function primary() {
    var list = peerList();
    return list.filter(function (p) { return p.video === remoteVideo; })[0] || list[0] || spare || pending || null;
  }
  window.huizhenCall = { metrics: metrics, state: state, socket: socket,
                         pc: function () { var p = primary(); return p ? p.pc : null; },
                         pcs: function () { var out = {}; peerList().forEach(function (p) { out[p.id] = p.pc; }); return out; },
                         adapt: null, settings: settings,
                         restarter: function () { var p = primary(); return p ? p.restarter : null; },
                         lastSample: function () { return lastSample; }, when: when, next: next };

  function setStatus(text, kind) { statusEl.textContent = text; statusEl.className = "call-status " + (kind || ""); }
  // A signal for one peer; a connection not yet bound to anyone (the join's offer) keeps its
  // signals until it is.
  function signal(peer, payload) {
    payload.ref = ref;
    if (payload.sdp) {
      payload.sdp = opusFmtp(payload.sdp);
      if (peer) flushCandidates(peer);  // the candidates of an earlier description go before it
    }
    if (peer && peer.id === null) { peer.outbox.push(payload); return; }
    if (peer) payload.to = peer.id;
    socket.emit("signal", payload);
  }
  // ICE candidates travel in batches: those a connection gathers within one short tick go in one
  // "candidates" signal (at most MAX_CANDIDATES, as the server allows), not in a message each; the
  // end of candidates (null) closes its batch at once.
  var CANDIDATE_TICK_MS = 10, MAX_CANDIDATES = 32;
  function queueCandidate(peer, candidate) {
    if (!peer.candidates) {
      peer.candidates = [];
      peer.candidateTimer = setTimeout(function () { flushCandidates(peer); }, CANDIDATE_TICK_MS);
    }
    peer.candidates.push(candidate);
    if (candidate === null || peer.candidates.length >= MAX_CANDIDATES) flushCandidates(peer);
  }
  function flushCandidates(peer) {
    clearTimeout(peer.candidateTimer);
    var batch = peer.candidates;
    peer.candidates = null;
    if (batch && batch.length) signal(peer, { type: "candidates", candidates: batch });
  }
  // Batches held for a connection not yet bound to anyone, joined up again (at most MAX_CANDIDATES each).
  function joinBatches(list) {
    var out = [];
    list.forEach(function (payload) {
      var last = out[out.length - 1];
      if (payload.type === "candidates" && last && last.type === "candidates" &&
          last.candidates.length + payload.candidates.length <= MAX_CANDIDATES) last.candidates = last.candidates.concat(payload.candidates);
      else out.push(payload);
    });
    return out;
  }
  // Reports that play no part in setting the call up (our media state for the others, the call's
  // stats record) wait this long after a join or a connection, so as not to compete with it.
  var REPORT_DELAY_MS = 1000;
  function later(fn) { setTimeout(function () { if (inCall) fn(); }, REPORT_DELAY_MS); }
  function now() { return performance.now() / 1000; }

  // The adaptation logic (static/js/adapt.js, hashed URL in data-adapt-src) is fetched when the
  // doctor joins, alongside the camera: a room visit that never joins the call does not load it.
  var adaptLoading = null;
  function setUpAdapt() {
    if (!adapt) {
      adapt = new HuizhenAdapt.Controller(settings.adapt);
      if (forced) adapt.force(forced);
      window.huizhenCall.adapt = adapt;
    }
    peerList().concat(spare ? [spare] : []).forEach(function (p) {
      if (!p.restarter) { p.restarter = new HuizhenAdapt.Restarter(settings.ice); p.restarter.change(p.pc.iceConnectionState, now()); }
    });
    return adapt;
  }
  function loadAdapt() {
    if (window.HuizhenAdapt) return Promise.resolve(setUpAdapt());
    if (!adaptLoading) {
      adaptLoading = new Promise(function (resolve) {
        var script = document.createElement("script");
        script.src = root.dataset.adaptSrc;
        script.onload = function () { resolve(setUpAdapt()); };
        script.onerror = function () { adaptLoading = null; resolve(null); };  // tried again on the next join
        document.head.appendChild(script);
      });
    }
    return adaptLoading;
  }

  // Opus options in both directions' descriptions: the fmtp a side receives tells its encoder to
  // add in-band FEC (useinbandfec=1) and to send nothing during silence (usedtx=1).
  function opusFmtp(sdp) {
    var opts = settings.opus || { fec: true, dtx: true };
    var want = [];
    if (opts.fec) want.push(["useinbandfec", "1"]);
    if (opts.dtx) want.push(["usedtx", "1"]);
    if (!want.length || typeof sdp !== "string") return sdp;
    var eol = sdp.indexOf("\r\n") >= 0 ? "\r\n" : "\n";
    var lines = sdp.split(eol), types = {};
    lines.forEach(function (line) {
      var m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line);
      if (m) types[m[1]] = true;
    });
    var seen = {};
    lines = lines.map(function (line) {
      var m = /^a=fmtp:(\d+) (.*)$/.exec(line);
      if (!m || !types[m[1]]) return line;
      seen[m[1]] = true;
      var params = m[2].split(";").filter(Boolean);
      want.forEach(function (kv) {
        var i = params.findIndex(function (p) { return p.split("=")[0].trim() === kv[0]; });
        if (i >= 0) params[i] = kv[0] + "=" + kv[1]; else params.push(kv[0] + "=" + kv[1]);
      });
      return "a=fmtp:" + m[1] + " " + params.join(";");
    });
    var out = [];
    lines.forEach(function (line) {
      out.push(line);
      var m = /^a=rtpmap:(\d+) opus\/48000/i.exec(line);
      if (m && !seen[m[1]]) out.push("a=fmtp:" + m[1] + " " + want.map(function (kv) { return kv.join("="); }).join(";"));
    });
    return out.join(eol);
  }

  // Caps on what each sender may use, set once a negotiation has given it its encodings.
  function capped(params, kind, withPreference) {
    var video = settings.video || {}, enc = params.encodings[0];
    if (kind === "video") {
      if (video.max_kbps) enc.maxBitrate = video.max_kbps * 1000;
      if (video.scale_down) enc.scaleResolutionDownBy = video.scale_down;
      if (video.max_fps) enc.maxFramerate = video.max_fps;
      enc.priority = enc.networkPriority = "low";
      if (withPreference && video.degradation) params.degradationPreference = video.degradation;
    } else {
      enc.priority = enc.networkPriority = "high";  // the voice goes first on a thin link
    }
    return params;
  }
  var capping = Promise.resolve();
  function applySenderCaps() {  // one at a time: a second setParameters meanwhile would be refused
    capping = capping.then(capSenders, capSenders);
    return capping;
  }
  async function capSenders() {
    var senders = [];
    peerList().forEach(function (p) { senders = senders.concat(p.pc.getSenders()); });
    for (var i = 0; i < senders.length; i++) {
      var sender = senders[i], kind = sender.track ? sender.track.kind : null;
      if (!kind || !sender.getParameters().encodings || !sender.getParameters().encodings.length) continue;
      try {
        await sender.setParameters(capped(sender.getParameters(), kind, true));
      } catch (e) {  // a browser that does not take the degradation preference: the caps alone
        try { await sender.setParameters(capped(sender.getParameters(), kind, false)); } catch (e2) { console.warn("sender caps", e2); }
      }
    }
  }

  function sendState() { if (joined) socket.emit("state", Object.assign({ ref: ref }, state)); }
  // The sender that carries (or would carry) our video on one connection.
  function videoSenderOf(pc) {
    var video = pc.getTransceivers().filter(function (t) { return t.receiver.track && t.receiver.track.kind === "video" && !t.stopped; });
    return pc.getTransceivers().map(function (t) { return t.sender; })
      .filter(function (s) { return s.track ? s.track.kind === "video" : false; })[0] ||
      video.filter(function (t) { return t.mid !== null; }).concat(video).map(function (t) { return t.sender; })[0] || null;
  }
  function videoSenders() {
    return peerList().map(function (p) { return { peer: p, sender: videoSenderOf(p.pc) }; }).filter(function (x) { return x.sender; });
  }

  // --- the tiles: one per remote person, the first is the page's #call-remote ---------------------
  var ROLE_LABELS = { requester: function () { return t("Requesting doctor"); },
                      lead_specialist: function () { return t("Lead specialist"); },
                      specialist: function () { return t("Invited specialist"); },
                      trainee: function () { return t("Trainee"); } };
  function caption(peer) {
    var label = ROLE_LABELS[peer.role] ? ROLE_LABELS[peer.role]() : "";
    return label ? t("%(name)s · %(role)s", { name: peer.name || "", role: label }) : (peer.name || "");
  }
  function giveTile(peer) {
    if (peer.tile) return;
    var first = remoteVideo.closest(".remote-tile");
    var tile = first;
    if (first.dataset.user) {
      tile = first.cloneNode(true);
      var video = tile.querySelector("video");
      video.removeAttribute("id"); video.className = "video-tile remote"; video.srcObject = null;
      remotesEl.appendChild(tile);
    }
    tile.dataset.user = String(peer.id);
    tile.hidden = false;
    peer.tile = tile;
    peer.video = tile.querySelector("video");
    peer.video.muted = soundBlocked;
    nameTile(peer);
    layoutTiles();
  }
  function nameTile(peer) {
    if (!peer.tile) return;
    var cap = peer.tile.querySelector(".tile-name");
    cap.textContent = caption(peer);
    peer.video.setAttribute("aria-label", caption(peer) || t("The other doctor"));
  }
  function dropTile(peer) {
    if (!peer.tile) return;
    peer.video.srcObject = null;
    peer.video.classList.remove("live", "peer-audio-only");
    if (peer.video === remoteVideo) { delete peer.tile.dataset.user; peer.tile.querySelector(".tile-name").textContent = ""; }
    else peer.tile.remove();
    peer.tile = peer.video = null;
    layoutTiles();
  }
  function layoutTiles() {
    var n = remotesEl.querySelectorAll(".remote-tile[data-user]").length;
    remotesEl.dataset.count = String(Math.max(1, n));
  }

  // --- one peer connection per remote person ------------------------------------------------------
  // offer: whether this side starts the negotiation. The side that joins later offers; the side
  // already waiting (or told that the peer came back) recreates its connection and answers.
  function makePeer(id, info, offer) {
    var peer = { id: id, name: "", role: "", polite: true, makingOffer: false, ignoreOffer: false, holdOffer: !offer,
                 pc: null, restarter: null, reportedConnected: false, tile: null, video: null, outbox: [], lastRecv: null, state: {},
                 candidates: null, candidateTimer: null };
    describe(peer, info);
    build(peer, offer);
    return peer;
  }
  function describe(peer, info) {
    if (!info) return;
    if (info.name) peer.name = info.name;
    if (info.role) peer.role = info.role;
    if (typeof info.polite === "boolean") peer.polite = info.polite;
    nameTile(peer);
  }
  function closePc(pc) {
    if (!pc) return;
    pc.onicecandidate = pc.ontrack = pc.onnegotiationneeded = pc.oniceconnectionstatechange = pc.onconnectionstatechange = pc.onsignalingstatechange = null;
    pc.close();
  }
  function build(peer, offer) {
    closePc(peer.pc);
    clearTimeout(peer.candidateTimer); peer.candidates = null;  // the old connection's
    peer.holdOffer = !offer; peer.makingOffer = false; peer.ignoreOffer = false;
    peer.reportedConnected = false; peer.lastRecv = null;
    if (peer.video === remoteVideo) metrics.firstRemoteFrameMs = null;
    delete metrics.firstFrames[peer.id];
    var pc = peer.pc = new RTCPeerConnection({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" });
    peer.restarter = window.HuizhenAdapt ? new HuizhenAdapt.Restarter(settings.ice) : null;
    if (localStream) localStream.getTracks().forEach(function (t) { pc.addTrack(t, localStream); });
    if (offer) wantRemoteMedia(pc);
    pc.onnegotiationneeded = async function () {
      if (peer.holdOffer) { peer.holdOffer = false; return; }
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        signal(peer, { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
        mark("offer_sent");
      } catch (e) { console.warn("negotiation failed", e); } finally { peer.makingOffer = false; }
    };
    pc.onicecandidate = function (e) { if (peer.pc === pc) queueCandidate(peer, e.candidate ? e.candidate.toJSON() : null); };
    pc.ontrack = function (e) {
      mark("track");
      if (peer.id === null) return;  // bound (and given a tile) before its answer can bring tracks
      giveTile(peer);
      var stream = e.streams[0] || new MediaStream([e.track]);
      if (peer.video.srcObject !== stream) peer.video.srcObject = stream;
      gateAudio(peer);
      playRemote(peer.video);
      watchFirstFrame(peer);
    };
    pc.onsignalingstatechange = function () { if (pc.signalingState === "stable") applySenderCaps(); };
    // A dropped link comes back by itself: ICE restarts at once on "failed", after a grace period
    // on "disconnected", and again while it stays down (the restart offer goes through the usual
    // signaling; perfect negotiation settles two restarts crossing).
    pc.oniceconnectionstatechange = function () {
      var s = pc.iceConnectionState;
      if (s === "failed") setStatus(t("Connection lost — reconnecting…"), "warn");
      else if (s === "disconnected") setStatus(t("Connection unstable — reconnecting…"), "warn");
      if (s === "disconnected" || s === "failed") checkSignaling();
      if (peer.restarter ? peer.restarter.change(s, now()) : s === "failed") restartIce(peer);
    };
    pc.onconnectionstatechange = function () {
      if (pc.connectionState === "connected") {
        peer.away = false; clearTimeout(peer.returnTimer);
        mark("connected");
        if (peerList().every(function (p) { return p.pc.connectionState === "connected"; })) setStatus(t("Connected"), "ok");
        if (!peer.reportedConnected) {
          peer.reportedConnected = true;
          if (metrics.connectedMs === null) {
            metrics.connectedMs = performance.now() - metrics.joinClickedAt;
            later(function () { reportStats(true); });
          }
        }
      }
    };
  }
  // Without a camera (or on audio only, or receive-only) our offer still asks for the other
  // side's audio and video. Only an offer needs this: an answering connection gets its
  // transceivers from the offer (one added beforehand would not be matched and would stay unused).
  function wantRemoteMedia(pc) {
    if (!localStream || !localStream.getAudioTracks().length) pc.addTransceiver("audio", { direction: "recvonly" });
    if (!localStream || !localStream.getVideoTracks().length) pc.addTransceiver("video", { direction: "recvonly" });
  }
  // A connection made before we know whom it is for takes its person now, and sends what it held.
  function bind(peer, id, info) {
    flushCandidates(peer);  // (into the outbox) those of the tick under way go with the rest
    peer.id = id;
    peers[id] = peer;
    describe(peer, info);
    var held = joinBatches(peer.outbox); peer.outbox = [];
    held.forEach(function (payload) { payload.to = id; socket.emit("signal", payload); });
  }
  function forget(peer) {
    clearTimeout(peer.returnTimer);
    closePc(peer.pc);
    dropTile(peer);
    if (peer.id !== null && peers[peer.id] === peer) delete peers[peer.id];
    showUnmute();
    showPeerStates();
  }
  function forgetAll() {
    peerList().forEach(forget);
    if (spare) { closePc(spare.pc); spare = null; }
    if (pending) { closePc(pending.pc); pending = null; }
  }
  // Wait for whoever comes next with a connection ready to answer their offer.
  function waitWithSpare() {
    if (spare) closePc(spare.pc);
    spare = makePeer(null, null, false);
  }
  // Someone joins (or came back with a new page): they offer, we answer on a fresh connection.
  function peerArrived(id, info) {
    var peer = peers[id];
    if (peer) { peer.away = false; clearTimeout(peer.returnTimer); build(peer, false); describe(peer, info); return peer; }
    // A spare that has not negotiated yet is ready to answer as it is: building a new one would
    // hold the page up just as the offer arrives.
    if (spare && !spare.pc.localDescription && !spare.pc.remoteDescription && spare.pc.signalingState === "stable") {
      peer = spare; spare = null;
    } else {
      peer = makePeer(null, null, false);
    }
    bind(peer, id, info);
    return peer;
  }

  function restartIce(peer) {
    if (!inCall) return;
    if (!peer) { peerList().forEach(restartIce); return; }
    if (!peer.pc) return;
    metrics.iceRestarts = (metrics.iceRestarts || 0) + 1;
    mark("ice_restart");
    peer.holdOffer = false;  // a restart is never the initial negotiation that a waiting side leaves to the other
    peer.pc.restartIce();
    checkSignaling();
  }
  window.huizhenCall.restartIce = function () { restartIce(null); };

  // A link that changed address leaves the signaling WebSocket on the old one: it still looks
  // connected, but nothing gets through until its ping timeout (45 s), and an ICE restart's offer
  // must get through. So when the media path breaks (nothing received for a second, ICE
  // disconnected or failed, a restart), the server is asked for an ack; without one in 5 s the
  // socket is closed and socket.io-client reconnects it (from the new address).
  var probing = false;
  function checkSignaling() {
    if (probing || !joined || !socket.connected) return;
    probing = true;
    var engine = socket.io.engine;
    socket.timeout(5000).emit("state", Object.assign({ ref: ref }, state), function (err) {
      probing = false;
      if (err && socket.io.engine === engine && socket.connected) { mark("signaling_reset"); engine.close(); }
    });
  }
  // Signaling is back (ours or another's): an offer of ours sent meanwhile may have been lost, so
  // it goes again (perfect negotiation settles two that cross); with no negotiation under way and
  // the media still down, ICE restarts now rather than at the next retry. Pairwise.
  function renegotiateAfterGap(peer) {
    if (!inCall || !joined) return;
    if (!peer) { peerList().forEach(renegotiateAfterGap); return; }
    var pc = peer.pc;
    if (!pc) return;
    if (pc.signalingState === "have-local-offer" && pc.localDescription) signal(peer, { type: "offer", sdp: pc.localDescription.sdp });
    else if (pc.signalingState === "stable" && ["connected", "completed"].indexOf(pc.iceConnectionState) < 0) restartIce(peer);
  }

  async function getMedia() {
    var constraints = {
      audio: micSelect.value ? { deviceId: { exact: micSelect.value } } : true,
      video: state.audio_only ? false : (camSelect.value ? { deviceId: { exact: camSelect.value } } : { width: { ideal: 640 }, height: { ideal: 480 } })
    };
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      if (constraints.video) {  // no camera: carry on with audio only
        state.audio_only = true;
        return navigator.mediaDevices.getUserMedia({ audio: constraints.audio });
      }
      throw e;
    }
  }

  async function listDevices() {
    var devices = await navigator.mediaDevices.enumerateDevices();
    [[camSelect, "videoinput"], [micSelect, "audioinput"]].forEach(function (pair) {
      var select = pair[0], current = select.value;
      select.textContent = "";
      devices.filter(function (d) { return d.kind === pair[1]; }).forEach(function (d, i) {
        var opt = document.createElement("option");
        opt.value = d.deviceId;
        opt.textContent = d.label || (pair[1] === "videoinput" ? t("Camera %(n)s", { n: i + 1 }) : t("Microphone %(n)s", { n: i + 1 }));
        select.appendChild(opt);
      });
      if (current) select.value = current;
    });
  }

  // --- adapting to the link -----------------------------------------------------------------
  // Once a second: what the link allows this side to send (adapt.js decides, from the weakest of
  // our connections), and what we receive from the others (told to them, every few seconds, in
  // the call state).
  async function sampleOne(pc) {
    var stats = await pc.getStats(), pair = null, s = { kbps: null, loss_pct: null, rtt_ms: null, jitter_ms: null };
    var recv = { videoBytes: 0, audioBytes: 0, height: 0, frames: 0 };
    stats.forEach(function (r) { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    if (!pair) stats.forEach(function (r) { if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r; });
    if (pair) {
      if (typeof pair.availableOutgoingBitrate === "number") s.kbps = pair.availableOutgoingBitrate / 1000;
      if (typeof pair.currentRoundTripTime === "number") s.rtt_ms = pair.currentRoundTripTime * 1000;
    }
    stats.forEach(function (r) {
      // Only what we are sending now: the video's last receiver report stays in the stats after
      // video stopped and would hold its old loss for ever.
      if (r.type === "remote-inbound-rtp" && (r.kind === "audio" || !state.audio_only)) {
        if (typeof r.fractionLost === "number") s.loss_pct = Math.max(s.loss_pct || 0, r.fractionLost * 100);
        if (typeof r.jitter === "number") s.jitter_ms = Math.max(s.jitter_ms || 0, r.jitter * 1000);
        if (s.rtt_ms === null && typeof r.roundTripTime === "number") s.rtt_ms = r.roundTripTime * 1000;
      }
      if (r.type === "inbound-rtp" && r.kind === "video") { recv.videoBytes += r.bytesReceived || 0; recv.frames += r.framesDecoded || 0; recv.height = Math.max(recv.height, r.frameHeight || 0); }
      if (r.type === "inbound-rtp" && r.kind === "audio") recv.audioBytes += r.bytesReceived || 0;
    });
    return { link: s, recv: recv };
  }
  function worst(a, b, pick) { return a === null ? b : b === null ? a : pick(a, b); }
  async function sample() {
    var link = { t: now(), kbps: null, loss_pct: null, rtt_ms: null, jitter_ms: null };
    var recv = { at: now(), videoBytes: 0, audioBytes: 0, height: 0, frames: 0 };
    var live = peerList().filter(function (p) { return p.pc.connectionState === "connected"; });
    for (var i = 0; i < live.length; i++) {
      var got = await sampleOne(live[i].pc);
      link.kbps = worst(link.kbps, got.link.kbps, Math.min);
      link.loss_pct = worst(link.loss_pct, got.link.loss_pct, Math.max);
      link.rtt_ms = worst(link.rtt_ms, got.link.rtt_ms, Math.max);
      link.jitter_ms = worst(link.jitter_ms, got.link.jitter_ms, Math.max);
      recv.videoBytes += got.recv.videoBytes; recv.audioBytes += got.recv.audioBytes;
      recv.frames += got.recv.frames; recv.height = Math.max(recv.height, got.recv.height);
    }
    return { link: link, recv: recv };
  }

  var recvReported = null, recvSentAt = 0;
  function reportReceiving(recv) {
    var prev = lastRecv;
    lastRecv = recv;
    if (!prev || recv.at - prev.at <= 0) return;
    var secs = recv.at - prev.at, video = recv.frames > prev.frames;
    var rate = function (bytes) { return Math.min(100000, Math.max(0, Math.round(bytes * 8 / secs / 1000))); };  // the server takes 0…100000
    var report = { recv_height: video ? Math.min(recv.height, 100000) : 0,
                   recv_kbps: video ? rate(recv.videoBytes - prev.videoBytes) : 0,
                   recv_audio_kbps: rate(recv.audioBytes - prev.audioBytes) };
    var changed = !recvReported || recvReported.recv_height !== report.recv_height ||
      Math.abs(recvReported.recv_kbps - report.recv_kbps) > Math.max(20, recvReported.recv_kbps * 0.2);
    if (!changed && recv.at - recvSentAt < 10) return;  // a change at once, else every 10 s
    if (changed && recv.at - recvSentAt < 2) return;     // at most one report in 2 s
    recvReported = report; recvSentAt = recv.at;
    Object.assign(state, report);
    sendState();
  }

  async function adaptTick() {
    peerList().forEach(function (p) { if (p.restarter && p.restarter.tick(now())) restartIce(p); });
    if (!joined || !peerList().some(function (p) { return p.pc.connectionState === "connected"; })) return;
    var got;
    try { got = await sample(); } catch (e) { return; }
    lastSample = got.link;
    // Not a byte from the others since the last sample (audio flows even in silence, DTX
    // sends comfort noise): the link is down, not weak; the stats would only repeat stale reports.
    var silent = lastRecv && got.recv.audioBytes === lastRecv.audioBytes && got.recv.videoBytes === lastRecv.videoBytes;
    reportReceiving(got.recv);
    if (silent) checkSignaling();  // the first sign of a drop or a changed address, before ICE's own
    if (!adaptOn || !hasCamera || !adapt || !sends) return;
    if (silent) { adapt.interrupt(got.link.t); return; }
    var decision = adapt.feed(got.link);
    if (decision.changed) switchTo(decision.mode, decision.reason);
  }

  // Video on or off for this side, by the controller or by the user's button; one at a time.
  var hasCamera = true;
  function switchTo(mode, reason) {
    switching = switching.then(function () { return setVideo(mode === "video", reason); }).catch(function (e) { console.warn("switch failed", e); });
    return switching;
  }
  async function setVideo(on, reason) {
    if (on === !state.audio_only && !(on && localStream && !localStream.getVideoTracks().length)) { announce(reason); return; }
    if (!on) {
      if (screenTrack) await stopSharing();
      var off = videoSenders();
      for (var i = 0; i < off.length; i++) await off[i].sender.replaceTrack(null);
      if (localStream) localStream.getVideoTracks().forEach(function (tr) { tr.stop(); localStream.removeTrack(tr); });
      state.audio_only = true;
    } else {
      state.audio_only = false;  // getMedia asks for the camera again
      var fresh = await getMedia();
      var track = fresh.getVideoTracks()[0];
      if (!track) { hasCamera = false; announce(null); return; }  // the camera went away meanwhile
      if (localStream) {
        track.enabled = state.camera;
        localStream.addTrack(track);
        var list = peerList();
        for (var j = 0; j < list.length; j++) {
          var pc = list[j].pc, sender = videoSenderOf(pc);
          if (sender) {
            // A connection built while on audio only has a receive-only video transceiver: it must
            // send again (a renegotiation), in the same stream as the audio.
            var tr = pc.getTransceivers().filter(function (x) { return x.sender === sender; })[0];
            if (tr && (tr.direction === "recvonly" || tr.direction === "inactive")) { list[j].holdOffer = false; tr.direction = "sendrecv"; }
            if (sender.setStreams) sender.setStreams(localStream);
            await sender.replaceTrack(track);
          } else pc.addTrack(track, localStream);
        }
        await applySenderCaps();
      }
      fresh.getAudioTracks().forEach(function (tr) { tr.stop(); });
    }
    announce(reason);
  }
  function anyConnected() { return peerList().some(function (p) { return p.pc.connectionState === "connected"; }); }
  function announce(reason) {
    localVideo.classList.toggle("no-video", state.audio_only);
    state.auto_audio = state.audio_only && forced === null;
    audioOnlyBtn.textContent = state.audio_only ? t("Turn video back on") : t("Audio only");
    if (reason === "weak") setStatus(t("Weak connection — switched to audio only"), "warn");
    else if (reason === "recovered") setStatus(t("Connection recovered — video back on"), "ok");
    else if (reason === "forced" && anyConnected()) setStatus(t("Connected"), "ok");
    sendState();
    reportStats(false);
  }

  // After a reload there has been no click yet, and browsers may refuse to autoplay sound: then
  // (and only then: play() rejected with NotAllowedError) play the picture muted and offer a
  // button to turn the sound on. It stays offered while the sound is off and there is a picture.
  var soundBlocked = false;
  function remoteVideos() { return Array.prototype.slice.call(remotesEl.querySelectorAll("video")); }
  function showUnmute() { unmuteBtn.hidden = !(soundBlocked && remoteVideos().some(function (v) { return v.srcObject; })); }
  function playRemote(video) {
    video = video || remoteVideo;
    var attempt = video.play();
    if (!attempt) return;
    attempt.then(showUnmute, function (e) {
      if (!e || e.name !== "NotAllowedError") return;  // e.g. AbortError: a newer stream replaced this one
      soundBlocked = true;
      remoteVideos().forEach(function (v) { v.muted = true; });
      video.play().catch(function () {});
      showUnmute();
    });
  }
  window.huizhenCall.playRemote = playRemote;  // the browser tests play a stream of their own through it
  unmuteBtn.addEventListener("click", function () {
    soundBlocked = false;
    remoteVideos().forEach(function (v) { v.muted = false; if (v.srcObject) v.play().catch(function () {}); });
    showUnmute();
  });

  // Our own picture: shown at the first remote frame (or a second after the join), so that its
  // player is not set up while the call is.
  var selfView = null;  // the camera stream still to show as our picture
  function showSelf() {
    if (selfView && selfView === localStream && localVideo.srcObject !== selfView) localVideo.srcObject = selfView;
    selfView = null;
  }
  function watchFirstFrame(peer) {
    var video = peer.video;
    if (!video || metrics.firstFrames[peer.id] !== undefined || !video.requestVideoFrameCallback) return;
    video.requestVideoFrameCallback(function () {
      if (metrics.joinClickedAt !== null && metrics.firstFrames[peer.id] === undefined) {
        metrics.firstFrames[peer.id] = performance.now() - metrics.joinClickedAt;
        if (video === remoteVideo && metrics.firstRemoteFrameMs === null) { metrics.firstRemoteFrameMs = metrics.firstFrames[peer.id]; mark("first_frame"); }
        showSelf();
      }
      video.classList.add("live");
    });
  }

  // Through coturn: our end of the pair is a relay candidate, or theirs is (behind a symmetric NAT
  // one side may reach the other's relay address straight from its own mapping).
  async function relayInUse() {
    var list = peerList().filter(function (p) { return p.pc.connectionState === "connected"; }), found = null;
    for (var i = 0; i < list.length; i++) {
      var stats = await list[i].pc.getStats(), pair = null;
      stats.forEach(function (r) { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
      var local = pair && stats.get(pair.localCandidateId), remote = pair && stats.get(pair.remoteCandidateId);
      // Through coturn: our end of the pair is a relay candidate, or theirs is (behind a symmetric
      // NAT one side may reach the other's relay address straight from its own mapping).
      if (local) found = found || local.candidateType === "relay" || (!!remote && remote.candidateType === "relay");
    }
    return found;
  }

  async function quality() {
    var list = peerList().filter(function (p) { return p.pc.connectionState === "connected"; });
    if (!list.length) return null;
    var rtt = null, lost = 0, received = 0, bytes = 0;
    for (var i = 0; i < list.length; i++) {
      var stats = await list[i].pc.getStats();
      stats.forEach(function (r) {
        if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = Math.max(rtt || 0, r.currentRoundTripTime * 1000);
        if (r.type === "inbound-rtp") { lost += r.packetsLost || 0; received += r.packetsReceived || 0; bytes += r.bytesReceived || 0; }
      });
    }
    var at = performance.now(), kbps = null;
    if (lastBytes !== null && bytes >= lastBytes) kbps = ((bytes - lastBytes) * 8) / (at - lastStatsAt);
    lastBytes = bytes; lastStatsAt = at;
    var loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    return { rtt_ms: rtt === null ? null : Math.round(rtt), packet_loss_pct: Math.round(loss * 10) / 10, bitrate_kbps: kbps === null ? null : Math.round(kbps) };
  }

  async function showQuality() {
    var q = await quality();
    if (!q) return;
    var bad = (q.rtt_ms || 0) > 600 || q.packet_loss_pct > 8;
    var fair = (q.rtt_ms || 0) > 250 || q.packet_loss_pct > 2;
    qualityEl.className = "call-quality " + (bad ? "bad" : fair ? "fair" : "good");
    // "Good · 42 ms · loss 0.5% · 900 kbit/s · via relay": each figure its own msgid
    var parts = [bad ? t("Poor") : fair ? t("Fair") : t("Good"),
                 q.rtt_ms === null ? "—" : t("%(ms)s ms", { ms: q.rtt_ms }),
                 t("loss %(pct)s", { pct: q.packet_loss_pct + "%" })];
    if (q.bitrate_kbps !== null) parts.push(t("%(kbps)s kbit/s", { kbps: q.bitrate_kbps }));
    if (metrics.relayed) parts.push(t("via relay"));
    var summary = parts.join(" · ");
    qualityEl.textContent = bad && !state.audio_only && sends ? t("%(quality)s — try audio only", { quality: summary }) : summary;
  }

  async function reportStats(connected) {
    if (!peerList().length) return;
    var q = (await quality()) || {};
    metrics.relayed = await relayInUse();
    var payload = { ref: ref, connected: !!connected, relayed: metrics.relayed === null ? undefined : metrics.relayed, audio_only: state.audio_only };
    if (connected) payload.setup_ms = Math.round(metrics.connectedMs);
    ["rtt_ms", "packet_loss_pct", "bitrate_kbps"].forEach(function (k) { if (q[k] !== null && q[k] !== undefined) payload[k] = q[k]; });
    socket.emit("stats", payload);
  }

  async function join() {
    joinBtn.disabled = true;
    metrics.joinClickedAt = performance.now();
    metrics.marks = {};  // this join's milestones
    // adapt.js (fetched from the server) and the device lists are not needed to set the call up:
    // they come a second after the join (adaptation starts later anyway, see adaptTick)
    later(loadAdapt);
    if (sends) {
      setStatus(t("Starting camera and microphone…"));
      try {
        if (!localStream) {
          var wanted = !state.audio_only;
          localStream = await getMedia(); selfView = localStream;
          if (wanted && !localStream.getVideoTracks().length) hasCamera = false;  // nothing to adapt
          localVideo.classList.toggle("no-video", !localStream.getVideoTracks().length);
        }
        // each join (also after a refused one, which keeps the stream): the picture and the lists
        // still to show come a second later, if the call goes on
        if (selfView) later(showSelf);
        if (!camSelect.options.length && !micSelect.options.length) later(listDevices);
      } catch (e) {
        setStatus(t("Camera and microphone are not available: %(error)s. Check the browser's permissions.", { error: e.name }), "bad");
        joinBtn.disabled = false;
        return;
      }
    } else if (!localStream) {
      localStream = new MediaStream();  // receive-only: no camera, no microphone
      localVideo.classList.add("no-video");
    }
    mark("media");
    inCall = true;
    sessionStorage.setItem("huizhen-call-" + ref, "1");
    root.classList.add("in-call");
    await sendJoin();
  }

  function peopleOf(ack) {
    var info = {};
    (ack.people || []).forEach(function (p) {
      info[p.user_id] = { name: p.name, role: p.role, sends: p.sends,
                          polite: ack.polite_to && typeof ack.polite_to[p.user_id] === "boolean" ? ack.polite_to[p.user_id] : ack.polite };
    });
    return info;
  }
  function configureAll() {
    peerList().concat(spare ? [spare] : []).forEach(function (p) {
      try { p.pc.setConfiguration({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" }); } catch (e) { /* unchanged */ }
    });
  }

  // Join and offer in one message: when one other person is in the call, the server tells them
  // we are here, then hands over our offer, so setting up a two-party call costs no extra round
  // trip. (Events from one client are handled in order on the server, so our ICE candidates
  // follow the offer.) With more, the same offer goes to the first of them and a connection of
  // its own offers to each of the others.
  async function sendJoin() {
    // One join at a time: while the signaling socket is down (a click during a network drop)
    // the "connect" handler below sends the join; emitting here too would queue a second one,
    // and the others would set up the call twice.
    if (!socket.connected) return;
    forgetAll();
    early = [];
    var offered = pending = makePeer(null, null, false);
    wantRemoteMedia(offered.pc);
    var offer = null;
    try {
      await offered.pc.setLocalDescription();
      offer = { type: offered.pc.localDescription.type, sdp: opusFmtp(offered.pc.localDescription.sdp) };
    } catch (e) { console.warn("could not create an offer", e); }
    mark("offer_sent");
    socket.timeout(15000).emit("join", { ref: ref, offer: offer }, function (err, ack) {
      if (!inCall || joined) return;  // hung up meanwhile, or already joined
      if (HuizhenLive.retryable(err, ack)) {  // not refused, only not done: join again, backing off
        live.later(t("Could not join the call"), function () { if (inCall && !joined) sendJoin(); });
        return;
      }
      if (!ack.ok) { refused(ack); return; }
      mark("joined");
      live.joined();
      joined = true;
      if (ack.me) me = ack.me;
      iceServers = ack.ice_servers;  // fresh TURN credentials for later ICE restarts
      var info = peopleOf(ack), others = Object.keys(info).map(Number);
      if (pending === offered) {
        pending = null;
        var first = ack.offered_to || (offer && others.filter(function (id) { return !peers[id]; })[0]);
        if (first && !peers[first]) {
          if (!ack.offered_to) offered.outbox.unshift({ type: "offer", sdp: offer.sdp, ref: ref });  // before its candidates
          bind(offered, first, info[first]);
          if (info[first].sends !== false) giveTile(offered);
        } else {
          // Nobody was in the call to take the offer sent with this join (or their offer already
          // came): wait with a fresh connection, which answers at once when someone joins and
          // offers; rebuilding it only then would hold the page up just as their offer arrives.
          closePc(offered.pc);
        }
      }
      others.forEach(function (id) {
        if (peers[id]) { describe(peers[id], info[id]); return; }
        var peer = makePeer(id, info[id], true);
        peers[id] = peer;
        if (info[id].sends !== false) giveTile(peer);
      });
      if (!peerList().length) waitWithSpare();
      var overtaken = early; early = [];
      overtaken.forEach(function (msg) { if (peers[msg.from]) onSignal(msg); });
      configureAll();
      later(sendState);
      if (!anyConnected()) setStatus(others.length ? t("Connecting…") : t("Waiting for the other doctor to join…"));
      clearInterval(statsTimer);
      statsTimer = setInterval(function () { showQuality(); }, 2000);
      clearInterval(adaptTimer);
      adaptTimer = setInterval(adaptTick, 1000);
      clearInterval(reportTimer);
      reportTimer = setInterval(function () { if (anyConnected()) reportStats(false); }, 15000);
      showHands(ack.hands || []);
    });
  }

  // The server refused the join (no longer a participant, the call closed or full): out of the
  // call, saying why.
  function refused(ack) {
    inCall = false;
    sessionStorage.removeItem("huizhen-call-" + ref);
    root.classList.remove("in-call");
    forgetAll();
    setStatus((ack && ack.message) || t("You cannot join this call."), "bad");
    joinBtn.disabled = false;
  }

  function hangUp() {
    inCall = false; joined = false;
    sessionStorage.removeItem("huizhen-call-" + ref);
    signal(null, { type: "bye" });
    socket.emit("leave", { ref: ref });
    forgetAll();
    if (localStream) { localStream.getTracks().forEach(function (t) { t.stop(); }); localStream = null; }
    if (screenTrack) { screenTrack.onended = null; screenTrack.stop(); screenTrack = null; }
    state.screen = false; screenBtn.textContent = t("Share screen");
    localVideo.srcObject = null;
    showUnmute();
    clearInterval(statsTimer);
    clearInterval(adaptTimer);
    theirViewEl.textContent = "";
    peerStateEl.textContent = "";
    root.classList.remove("in-call");
    joinBtn.disabled = false;
    showHands([]);
    speaking = false; root.classList.remove("speaking");
    if (micTrack) { micTrack.stop(); micTrack = null; }
    setStatus(t("You left the call."));
  }

  // Someone whose connection dropped has this long to come back (their page resumes or rejoins);
  // then their connection goes, as if they had hung up, so that the others' calls no longer wait
  // on them.
  var RETURN_GRACE_MS = 60000;
  function awaitReturn(peer) {
    var pc = peer.pc;
    peer.away = pc.connectionState !== "connected";  // their media may still flow (only signaling went)
    clearTimeout(peer.returnTimer);
    peer.returnTimer = setTimeout(function () {
      if (inCall && peers[peer.id] === peer && peer.pc === pc && pc.connectionState !== "connected") peerGone(peer);
    }, RETURN_GRACE_MS);
  }
  // Someone hung up: their connection goes; alone again, a fresh one waits for the next to join.
  function peerGone(peer) {
    var name = peer.name;
    forget(peer);
    mark("peer_left");
    if (!peerList().length) {
      if (!spare) waitWithSpare();
      setStatus(t("The other doctor left the call. You can wait here; they can rejoin."));
    } else {
      setStatus(t("%(name)s left the call.", { name: name }));
    }
  }

  // Signals that came before our join's ack from someone it will name: the answer to the offer
  // sent with the join (and its candidates) can overtake the ack; they wait for it.
  var early = [];
  socket.on("signal", onSignal);
  async function onSignal(msg) {
    if (!inCall) return;
    var peer = msg.from !== undefined ? peers[msg.from] : primary();
    if (!peer) {
      if (msg.type !== "offer" && msg.from !== undefined && pending && !joined) { early.push(msg); return; }
      if (msg.type !== "offer" || msg.from === undefined || !localStream) return;
      peer = peerArrived(msg.from, null);  // an offer from someone we had not been told of
    }
    try {
      if (msg.type === "offer" || msg.type === "answer") {
        mark(msg.type + "_received");
        var collision = msg.type === "offer" && (peer.makingOffer || peer.pc.signalingState !== "stable");
        peer.ignoreOffer = !peer.polite && collision;
        if (peer.ignoreOffer) return;
        await peer.pc.setRemoteDescription({ type: msg.type, sdp: opusFmtp(msg.sdp) });
        if (msg.type === "offer") {
          peer.holdOffer = false;
          await peer.pc.setLocalDescription();
          signal(peer, { type: peer.pc.localDescription.type, sdp: peer.pc.localDescription.sdp });
          mark("answer_sent");
        }
      } else if (msg.type === "candidate" || msg.type === "candidates") {
        var list = msg.type === "candidate" ? [msg.candidate] : msg.candidates || [], target = peer.pc;
        await Promise.all(list.map(function (c) {  // the connection takes them one after the other
          return target.addIceCandidate(c || null).catch(function (e) { if (!peer.ignoreOffer) console.warn(e); });
        }));
      } else if (msg.type === "bye") {
        peerGone(peer);
      }
    } catch (e) { console.warn("signal handling failed", e); }
  }
  socket.on("peer-joined", function (data) {
    if (!inCall || !localStream) return;
    var info = { name: data.name, role: data.role, sends: data.sends };
    if (data.polite_to && typeof data.polite_to[me] === "boolean") info.polite = data.polite_to[me];
    // They offer; we answer. A connection that has not negotiated yet (we were waiting) is
    // ready to answer as it is; any other (they reloaded or reconnected) is replaced.
    var peer = peerArrived(data.user_id, info);
    if (data.sends !== false) giveTile(peer);
    setStatus(peerList().length > 1 ? t("%(name)s joined — connecting…", { name: data.name || "" }) : t("The other doctor joined — connecting…"));
  });
  socket.on("peer-resumed", function (data) {
    // Their signaling came back and they kept the call: nothing to rebuild.
    if (!inCall) return;
    var peer = data && peers[data.user_id];
    if (peer && peer.pc.connectionState === "connected" && anyConnected()) setStatus(t("Connected"), "ok");
    if (peer) { peer.away = false; clearTimeout(peer.returnTimer); renegotiateAfterGap(peer); }
  });
  socket.on("peer-left", function (data) {
    if (!inCall) return;
    var peer = data && peers[data.user_id];
    // Hung up, or removed from the consult (their connection is closed at once: nothing more of
    // the call reaches them)
    if (data && (data.reason === "hung_up" || data.reason === "removed")) {
      if (peer) peerGone(peer);
      else if (!peerList().length) { showUnmute(); setStatus(t("The other doctor left the call. You can wait here; they can rejoin.")); }
      return;
    }
    if (peer) awaitReturn(peer);
    if (peer && peer.video) peer.video.classList.remove("live");
    if (peer) { peer.state = {}; showPeerStates(); }
    setStatus(peerList().length > 1 && peer ? t("%(name)s's connection dropped — waiting for them to come back…", { name: peer.name })
                                           : t("The other doctor's connection dropped — waiting for them to come back…"), "warn");
  });
  function statesOf(s) {
    var parts = [];
    if (s.muted) parts.push(t("muted"));
    if (s.camera === false || s.audio_only) parts.push(!s.audio_only ? t("camera off") : s.auto_audio ? t("audio only (weak connection)") : t("audio only"));
    if (s.screen) parts.push(t("sharing screen"));
    if (s.reconnecting) parts.push(t("reconnecting"));
    return parts;
  }
  function showPeerStates() {
    var list = peerList().filter(function (p) { return p.sends !== false; }), lines = [];
    // Translators: the separator between the other doctor's states ("muted, sharing screen")
    var separator = t(", ");
    list.forEach(function (p) {
      var parts = statesOf(p.state || {});
      if (!parts.length) return;
      lines.push(list.length === 1 ? t("Other doctor: %(states)s", { states: parts.join(separator) })
                                   : t("%(name)s: %(states)s", { name: p.name, states: parts.join(separator) }));
    });
    peerStateEl.textContent = lines.join(" · ");
  }
  socket.on("peer-state", function (s) {
    var peer = peers[s.user_id];
    if (!peer) return;
    peer.state = s;
    showPeerStates();
    peerStateEl.dataset.muted = s.muted ? "true" : "false";
    if (peer.video) peer.video.classList.toggle("peer-audio-only", !!s.audio_only);
    // The other side's link chose audio only, or video again: said on our status line too,
    // unless our own link has just said the same of us.
    var auto = !!(s.audio_only && s.auto_audio), single = peerList().length === 1;
    if (auto !== !!peer.auto && !state.auto_audio) {
      if (auto) setStatus(single ? t("The other doctor's connection is weak — their video is paused, audio continues")
                                 : t("%(name)s's connection is weak — their video is paused, audio continues", { name: peer.name }), "warn");
      else if (!s.audio_only) setStatus(single ? t("The other doctor's video is back on") : t("%(name)s's video is back on", { name: peer.name }), "ok");
    }
    peer.auto = auto;
    peerAuto = auto;
    // What they receive from us, as they measured it (said for a two-party call).
    if (single && typeof s.recv_height === "number") {
      theirViewEl.textContent = s.recv_height > 0
        ? t("They receive: video %(height)sp · ~%(kbps)s kbit/s", { height: s.recv_height, kbps: s.recv_kbps })
        : t("They receive: audio only · ~%(kbps)s kbit/s", { kbps: s.recv_audio_kbps || 0 });
    } else if (!single) theirViewEl.textContent = "";
  });
  // Reconnect after a refused connect and retry a failed join, with backoff (static/js/live.js).
  var live = HuizhenLive.keep(socket, function (kind, text) { if (inCall) setStatus(text, "warn"); });
  socket.on("connect", function () {
    if (!inCall || joined) return;
    // The signaling connection came back. A call that was negotiated is kept (the media may
    // have held through the drop, or its ICE restart is under way): rejoin without new
    // connections, so no side tears down what works. Otherwise rejoin and renegotiate.
    var kept = peerList().some(function (p) {
      return p.pc.remoteDescription && ["connected", "connecting", "disconnected"].indexOf(p.pc.connectionState) >= 0;
    });
    if (kept) resumeJoin(); else sendJoin();
  });
  function resumeJoin() {
    var kept = peerList().map(function (p) { return [p, p.pc]; });
    socket.timeout(15000).emit("join", { ref: ref, resume: true }, function (err, ack) {
      if (!inCall || joined) return;
      if (HuizhenLive.retryable(err, ack)) {
        live.later(t("Could not join the call"), function () { if (inCall && !joined) resumeJoin(); });
        return;
      }
      if (!ack.ok) { refused(ack); return; }
      mark("resumed");
      joined = true;
      iceServers = ack.ice_servers;
      var info = peopleOf(ack);
      Object.keys(info).forEach(function (id) { if (peers[id]) describe(peers[id], info[id]); });
      configureAll();
      sendState();
      showHands(ack.hands || []);
      if (!Object.keys(info).length) return;  // they are away too: their return sends peer-resumed or peer-joined
      renegotiateAfterGap(null);
      // The kept connections must come back by themselves (their ICE restart, retried every 5,
      // 10, 20 s); if one has not within 20 s, or failed for good (its peer rebuilt theirs
      // meanwhile), set the call up anew.
      setTimeout(function () {
        if (!inCall || !joined) return;
        var stuck = kept.some(function (k) {
          return peers[k[0].id] === k[0] && k[0].pc === k[1] && k[1].connectionState !== "connected" && !k[0].away;
        });
        if (stuck) { joined = false; sendJoin(); }
      }, 20000);
    });
  }
  socket.on("disconnect", function () { joined = false; });

  muteBtn.addEventListener("click", function () {
    state.muted = !state.muted;
    if (localStream) localStream.getAudioTracks().forEach(function (t) { t.enabled = !state.muted; });
    muteBtn.textContent = state.muted ? t("Unmute") : t("Mute");
    muteBtn.setAttribute("aria-pressed", state.muted);
    sendState();
  });
  camBtn.addEventListener("click", function () {
    state.camera = !state.camera;
    if (localStream) localStream.getVideoTracks().forEach(function (t) { t.enabled = state.camera; });
    camBtn.textContent = state.camera ? t("Camera off") : t("Camera on");
    sendState();
  });
  // The user's choice wins over the link's for the rest of the call.
  audioOnlyBtn.addEventListener("click", function () {
    forced = state.audio_only ? "video" : "audio";
    if (adapt) adapt.force(forced);
    switchTo(forced, "forced");
  });
  // Back to the camera, whether sharing ends by our button or by the browser's own "Stop sharing"
  // bar: track.stop() fires no "ended" event, so the button cannot rely on onended. The senders are
  // looked up now (a connection may have been rebuilt while sharing), and the others' video
  // carries the camera again without a renegotiation (replaceTrack).
  async function stopSharing() {
    if (!screenTrack) return;
    var track = screenTrack;
    screenTrack = null; track.onended = null; track.stop();
    state.screen = false; screenBtn.textContent = t("Share screen");
    var cam = localStream && localStream.getVideoTracks()[0];
    var list = videoSenders();
    for (var i = 0; i < list.length; i++) {
      try { await list[i].sender.replaceTrack(cam || null); } catch (e) { console.warn("back to the camera failed", e); }
    }
    sendState();
  }
  screenBtn.addEventListener("click", async function () {
    if (screenTrack) { await stopSharing(); return; }
    if (!videoSenders().length) return;
    try {
      var display = await navigator.mediaDevices.getDisplayMedia({ video: true });
      screenTrack = display.getVideoTracks()[0];
      screenTrack.onended = stopSharing;
      var list = videoSenders();
      for (var i = 0; i < list.length; i++) await list[i].sender.replaceTrack(screenTrack);
      state.screen = true; screenBtn.textContent = t("Stop sharing"); sendState();
    } catch (e) { setStatus(t("Screen sharing was not started: %(error)s", { error: e.name }), "warn"); }
  });
  [camSelect, micSelect].forEach(function (select) {
    select.addEventListener("change", async function () {
      if (!localStream) return;
      var kind = select === camSelect ? "video" : "audio";
      var fresh = await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { deviceId: { exact: select.value } } } : { audio: { deviceId: { exact: select.value } } });
      var track = kind === "video" ? fresh.getVideoTracks()[0] : fresh.getAudioTracks()[0];
      var old = kind === "video" ? localStream.getVideoTracks()[0] : localStream.getAudioTracks()[0];
      if (old) { localStream.removeTrack(old); old.stop(); }
      localStream.addTrack(track);
      if (kind === "audio") track.enabled = !state.muted;
      var list = peerList();
      for (var i = 0; i < list.length; i++) {
        var sender = list[i].pc.getSenders().filter(function (s) { return s.track === old || (s.track && s.track.kind === kind); })[0];
        if (sender) await sender.replaceTrack(track);
      }
      localVideo.srcObject = localStream;
    });
  });

  // --- a trainee's raised hand, and the lead letting them speak ------------------------------------
  // The server keeps who raised a hand and who may speak (the policy decides what they may send);
  // every page in the call gets the list ("hands"). The lead's page offers "Allow to speak" and
  // "Withdraw"; a trainee allowed to speak adds their microphone to each connection (audio only),
  // and takes it away again when the lead withdraws it.
  var canAllow = root.dataset.canAllow === "true", speaking = false, handRaised = false, micTrack = null;
  var mayTalk = {};  // user id -> true: the trainees the lead has let speak
  // A trainee's sound is played only while the lead lets them speak: each page enforces it on what
  // it receives, so a trainee's page that kept its microphone on after a withdrawal is not heard.
  function gateAudio(peer) {
    if (peer.role !== "trainee" || !peer.pc) return;
    peer.pc.getReceivers().forEach(function (r) {
      if (r.track && r.track.kind === "audio") r.track.enabled = !!mayTalk[peer.id];
    });
  }
  function showHands(hands) {
    mayTalk = {};
    hands.forEach(function (h) { if (h.allowed) mayTalk[h.user_id] = true; });
    peerList().forEach(gateAudio);
    if (handsEl) {
      handsEl.textContent = "";
      hands.forEach(function (h) {
        if (!canAllow && h.user_id !== me) return;
        var li = document.createElement("li");
        li.dataset.user = String(h.user_id);
        var text = document.createElement("span");
        text.textContent = h.allowed ? t("%(name)s may speak", { name: h.name }) : t("%(name)s raised a hand", { name: h.name });
        li.appendChild(text);
        if (canAllow) {
          var btn = document.createElement("button");
          btn.type = "button"; btn.className = "btn small " + (h.allowed ? "secondary" : "");
          btn.textContent = h.allowed ? t("Withdraw") : t("Allow to speak");
          btn.addEventListener("click", function () {
            socket.timeout(10000).emit("allow_speech", { ref: ref, user_id: h.user_id, allow: !h.allowed }, function (err, ack) {
              if (!err && ack && !ack.ok) setStatus(ack.message, "bad");
            });
          });
          li.appendChild(btn);
        }
        handsEl.appendChild(li);
      });
      handsEl.hidden = !handsEl.children.length;
    }
    var mine = hands.filter(function (h) { return h.user_id === me; })[0];
    handRaised = !!(mine && mine.raised);
    if (handBtn) {
      handBtn.textContent = handRaised ? t("Lower hand") : t("Raise hand");
      handBtn.setAttribute("aria-pressed", handRaised ? "true" : "false");
      handBtn.hidden = !!(mine && mine.allowed);
    }
    if (!sends && inCall) {
      if (mine && mine.allowed && !speaking) startSpeaking();
      else if (!(mine && mine.allowed) && speaking) stopSpeaking();
    }
  }
  socket.on("hands", function (data) { if (inCall) showHands(data.hands || []); });
  if (handBtn) handBtn.addEventListener("click", function () {
    socket.timeout(10000).emit("raise_hand", { ref: ref, raised: !handRaised }, function (err, ack) {
      if (!err && ack && !ack.ok) setStatus(ack.message, "bad");
    });
  });
  function audioTransceiver(pc) {
    return pc.getTransceivers().filter(function (tr) { return !tr.stopped && tr.receiver.track && tr.receiver.track.kind === "audio"; })[0] || null;
  }
  async function startSpeaking() {
    speaking = true;
    try {
      var got = await navigator.mediaDevices.getUserMedia({ audio: true });
      micTrack = got.getAudioTracks()[0];
    } catch (e) {
      speaking = false;
      setStatus(t("Camera and microphone are not available: %(error)s. Check the browser's permissions.", { error: e.name }), "bad");
      return;
    }
    if (!speaking) { micTrack.stop(); micTrack = null; return; }  // withdrawn meanwhile
    localStream.addTrack(micTrack);
    root.classList.add("speaking");
    var list = peerList();
    for (var i = 0; i < list.length; i++) {
      var tr = audioTransceiver(list[i].pc);
      list[i].holdOffer = false;
      if (tr) {
        if (tr.sender.setStreams) tr.sender.setStreams(localStream);
        await tr.sender.replaceTrack(micTrack);
        tr.direction = "sendrecv";
      } else list[i].pc.addTrack(micTrack, localStream);
    }
    setStatus(t("You may speak now: your microphone is on."), "ok");
  }
  async function stopSpeaking() {
    speaking = false;
    root.classList.remove("speaking");
    var list = peerList();
    for (var i = 0; i < list.length; i++) {
      var tr = audioTransceiver(list[i].pc);
      if (!tr) continue;
      list[i].holdOffer = false;
      await tr.sender.replaceTrack(null);
      tr.direction = "recvonly";
    }
    if (micTrack) { localStream.removeTrack(micTrack); micTrack.stop(); micTrack = null; }
    setStatus(t("The lead specialist has closed your microphone."), "warn");
  }

  joinBtn.addEventListener("click", join);
  leaveBtn.addEventListener("click", hangUp);
  // The browser says the network is back: restart ICE on the connections that are not connected
  // yet (one that already came back by itself keeps its "Connected": no stale "reconnecting").
  window.addEventListener("online", function () {
    if (!inCall) return;
    var down = peerList().filter(function (p) { return p.pc && p.pc.connectionState !== "connected"; });
    if (!down.length) return;
    setStatus(t("Network back — reconnecting…"), "warn");
    down.forEach(restartIce);
  });
  // A new address (another network, a new carrier NAT mapping): the old candidate pair is gone.
  if (navigator.connection && navigator.connection.addEventListener) {
    navigator.connection.addEventListener("change", function () { if (inCall && joined) restartIce(null); });
  }
  if (sessionStorage.getItem("huizhen-call-" + ref)) join();  // a reload re-establishes the call
})();
